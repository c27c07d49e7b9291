"""A cancel request stops a streaming call, and the worker confirms it with
exactly one final reply (an error of type ``Cancelled``) once the generator
has really stopped: an async generator is cancelled at once, a sync
generator's thread is waited for. The host counts a cancel left unconfirmed
long after it as a tool the worker could not stop (a stuck worker)."""

from __future__ import annotations

import json
import time

import pytest

from snakepit_bridge.generated import snakepit_bridge_pb2 as pb

FINAL = ("result", "error", "end")


def req(rid, tool, args=None, **kw):
    return pb.CallRequest(request_id=rid, tool_name=tool,
                          args_json=json.dumps(args or {}).encode(), **kw)


def replies_until(sc, until, timeout=20.0):
    """(reply, seconds since the call) pairs, flattened from CallReplyBatch
    messages, until until(replies) holds."""
    got = []
    deadline = time.monotonic() + timeout
    while not until([r for r, _ in got]):
        left = deadline - time.monotonic()
        assert left > 0, f"got {[r for r, _ in got]}"
        b = sc.get(timeout=left)
        assert b is not None, sc.error
        now = time.monotonic()
        got.extend((r, now) for r in b.replies)
    return got


def final_of(rid):
    return lambda rs: any(r.request_id == rid and r.WhichOneof("body") in FINAL for r in rs)


@pytest.mark.parametrize("transport", ["grpc.aio", "native"])
@pytest.mark.parametrize("tool", ["stream", "astream"])
def test_a_cancel_is_confirmed_by_exactly_one_final_reply(worker, stream_clients, transport,
                                                          tool):
    stub = worker.connect() if transport == "grpc.aio" else worker.connect_calls()
    sc = stream_clients(stub.CallBatchStream)
    sc.send(pb.CallBatch(calls=[req(1, tool, {"n": 10_000, "delay_ms": 20}, stream=True)]))
    replies_until(sc, lambda rs: any(r.WhichOneof("body") == "chunk" for r in rs))
    sc.send(pb.CallBatch(calls=[pb.CallRequest(request_id=1, cancel=True)]))
    got = [r for r, _ in replies_until(sc, final_of(1))]
    finals = [r for r in got if r.request_id == 1 and r.WhichOneof("body") in FINAL]
    assert len(finals) == 1, finals
    assert finals[0].error.type == "Cancelled", finals[0]
    assert "cancelled" in finals[0].error.message
    # Nothing more for that id: a later call's reply comes, and only it.
    time.sleep(0.3)
    sc.send(pb.CallBatch(calls=[req(2, "ping")]))
    after = [r for r, _ in replies_until(sc, final_of(2))]
    assert [r.request_id for r in after] == [2], after


def test_a_sync_generator_is_confirmed_only_when_its_thread_returns(worker, stream_clients):
    sc = stream_clients(worker.connect_calls().CallBatchStream)
    # Each item takes 1.5 s in the tool's thread: the cancel, sent right
    # after the first chunk, finds the thread busy producing the second.
    t0 = time.monotonic()
    sc.send(pb.CallBatch(calls=[req(1, "stream", {"n": 100, "delay_ms": 1500}, stream=True)]))
    replies_until(sc, lambda rs: any(r.WhichOneof("body") == "chunk" for r in rs))
    cancelled_at = time.monotonic()
    sc.send(pb.CallBatch(calls=[pb.CallRequest(request_id=1, cancel=True)]))
    got = replies_until(sc, final_of(1))
    finals = [(r, at) for r, at in got if r.WhichOneof("body") in FINAL]
    assert len(finals) == 1 and finals[0][0].error.type == "Cancelled", got
    # Not before the thread finished its item (3 s after the call started).
    assert finals[0][1] - t0 >= 2.9, (cancelled_at - t0, finals[0][1] - t0)
    # No chunk after the cancel's confirmation, and no second final reply.
    sc.send(pb.CallBatch(calls=[req(2, "ping")]))
    after = [r for r, _ in replies_until(sc, final_of(2))]
    assert [r.request_id for r in after] == [2], after


def test_a_cancel_in_the_same_batch_as_its_call_is_confirmed(worker, stream_clients):
    sc = stream_clients(worker.connect_calls().CallBatchStream)
    sc.send(pb.CallBatch(calls=[req(1, "astream", {"n": 1000, "delay_ms": 20}, stream=True),
                                pb.CallRequest(request_id=1, cancel=True)]))
    got = [r for r, _ in replies_until(sc, final_of(1))]
    finals = [r for r in got if r.WhichOneof("body") in FINAL]
    assert len(finals) == 1 and finals[0].error.type == "Cancelled", got
