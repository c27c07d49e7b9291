"""Every call gets its own outcome: a tool raising any BaseException, a
result JSON cannot carry, a result over --max-message-bytes. Each is that
call's tool error; the worker lives on and its other calls are answered."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from snakepit_bridge import _wire
from snakepit_bridge import worker as worker_mod
from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.worker.transport.call_state import pop_reply_batch

HOSTILE = "snakepit_bridge.adapters.hostile:HostileAdapter"
KINDS = ["SystemExit", "KeyboardInterrupt", "HostileExit"]


def req(rid, tool, args=None, **kw):
    return pb.CallRequest(request_id=rid, tool_name=tool,
                          args_json=json.dumps(args or {}).encode(), **kw)


def finals(sc, n, timeout=20.0):
    """Final replies by request id (and the chunks) until n calls are answered."""
    out, chunks, batches = {}, [], []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(out)} of {n} calls answered: {sorted(out)}"
        b = sc.get(timeout=left)
        assert b is not None, sc.error
        batches.append(b)
        for r in b.replies:
            if r.WhichOneof("body") == "chunk":
                chunks.append(r)
            else:
                out[r.request_id] = r
    return out, chunks, batches


@pytest.mark.parametrize("transport", ["grpc.aio", "native"])
def test_base_exceptions_are_tool_errors_and_the_worker_lives_on(start_worker, stream_clients,
                                                                 transport):
    w = start_worker("--telemetry-interval-s", "0", adapter=HOSTILE)
    stub = w.connect() if transport == "grpc.aio" else w.connect_calls()
    sc = stream_clients(stub.CallBatchStream)
    calls, expect = [], {}
    for tool in ["raise_base", "araise_base", "raise_base_inline", "astream_raise_base"]:
        for kind in KINDS:
            rid = len(calls) + 1
            calls.append(req(rid, tool, {"kind": kind}, stream=tool.startswith("astream")))
            expect[rid] = (tool, kind)
    sc.send(pb.CallBatch(calls=calls))
    got, chunks, _ = finals(sc, len(calls))
    for rid, (tool, kind) in expect.items():
        r = got[rid]
        assert r.WhichOneof("body") == "error", (tool, kind, r)
        assert r.error.type == kind, (tool, kind, r.error)
    assert len(chunks) == len(KINDS)  # each stream's chunk before its error
    assert w.proc.poll() is None, w.stderr()
    sc.send(pb.CallBatch(calls=[req(100, "ok")]))
    got, _, _ = finals(sc, 1)
    assert json.loads(got[100].result.result_json) == "ok"
    # The one-RPC-per-call path too.
    r = w.connect().ExecuteTool(pb.ExecuteToolRequest(
        tool_name="araise_base", args_json=b'{"kind": "KeyboardInterrupt"}'), timeout=10)
    assert not r.success and r.error.type == "KeyboardInterrupt"
    assert w.proc.poll() is None, w.stderr()


@pytest.mark.parametrize("tool", ["bad_result", "bad_result_inline"])
def test_a_result_json_cannot_carry_is_an_encode_error_naming_it(start_worker, stream_clients,
                                                                 tool):
    w = start_worker("--telemetry-interval-s", "0", adapter=HOSTILE)
    sc = stream_clients(w.connect_calls().CallBatchStream)
    kinds = ["nan", "inf", "-inf", "surrogate", "surrogate_key"]
    sc.send(pb.CallBatch(calls=[req(i, tool, {"kind": k}) for i, k in enumerate(kinds, 1)]))
    got, _, _ = finals(sc, len(kinds))
    for i, k in enumerate(kinds, 1):
        e = got[i].error
        assert e.type == "EncodeError", (k, got[i])
        path = "a key of result['outer']" if k == "surrogate_key" \
            else "result['outer']['values'][2]"
        assert path in e.message, e.message
        assert (k.lstrip("-") if "surrogate" not in k else "lone surrogate") in e.message


def test_encode_result_names_the_value_and_keeps_valid_text():
    with pytest.raises(worker_mod.ToolFailure) as e:
        worker_mod.encode_result({"a": [{"b": float("nan")}]})
    assert e.value.type == "EncodeError"
    assert "result['a'][0]['b'] is nan" in e.value.message
    # A pair of surrogates (an emoji) and text that looks like an escape are fine.
    data, _ = worker_mod.encode_result({"e": "\U0001F600", "t": "\\ud800"})
    assert json.loads(data) == {"e": "\U0001F600", "t": "\\ud800"}
    with pytest.raises(worker_mod.ToolFailure) as e:
        worker_mod.encode_result([1, object()])
    assert "result[1] is an object of type object" in e.value.message


def test_error_text_is_cut_saying_how_much():
    f = worker_mod.ToolFailure("X", "m" * 20_000, "t" * 70_000)
    assert len(f.message) < 16_500 and f.message.endswith("(3616 more characters cut)")
    assert len(f.tb) < 66_000 and f.tb.endswith("(4464 more characters cut)")


def test_a_reply_batch_of_several_replies_stays_under_the_limit():
    limit = worker_mod.max_message_bytes()
    try:
        worker_mod.set_max_message_bytes(1000)
        out = [_wire.reply_result(i, b'"' + b"x" * 398 + b'"') for i in range(5)]
        sizes = []
        while out:
            batch = pb.CallReplyBatch.FromString(pop_reply_batch(out))
            sizes.append(len(batch.replies))
            assert batch.ByteSize() <= 1000
        assert sizes == [2, 2, 1]
        # A lone reply goes whatever its size (the worker bounds results).
        out = [_wire.reply_result(1, b"x" * 5000)]
        assert len(pb.CallReplyBatch.FromString(pop_reply_batch(out)).replies) == 1
    finally:
        worker_mod.set_max_message_bytes(limit)


@pytest.mark.parametrize("transport", ["grpc.aio", "native"])
def test_a_result_over_the_limit_fails_alone(start_worker, stream_clients, transport):
    limit = 1 << 20
    w = start_worker("--telemetry-interval-s", "0", "--max-message-bytes", str(limit))
    stub = w.connect() if transport == "grpc.aio" else w.connect_calls()
    sc = stream_clients(stub.CallBatchStream)
    large = 700_000
    calls = [req(1, "big_result", {"n_bytes": 2 * limit}),
             req(2, "big_result", {"n_bytes": 2 * limit, "binary": True})]
    calls += [req(i, "big_result", {"n_bytes": large}) for i in range(3, 7)]
    calls += [req(i, "sleep", {"ms": 300}) for i in range(7, 11)]
    sc.send(pb.CallBatch(calls=calls))
    got, _, batches = finals(sc, len(calls))
    assert got[1].error.type == "ResultTooLarge"
    assert f"{2 * limit} bytes" in got[1].error.message
    assert f"limit of {limit} bytes" in got[1].error.message
    assert got[2].error.type == "ResultTooLarge"
    assert f"{2 * limit + 6} bytes" in got[2].error.message
    for i in range(3, 7):
        assert len(got[i].result.result_json) == large
    for i in range(7, 11):
        assert json.loads(got[i].result.result_json) == {"slept_ms": 300}
    for b in batches:
        assert len(b.replies) == 1 or b.ByteSize() <= limit
    assert w.proc.poll() is None


def test_max_message_bytes_below_1024_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "snakepit_bridge.worker", "--adapter", "x:Y",
                        "--listen", "unix:/nonexistent/w.sock", "--worker-id", "w",
                        "--max-message-bytes", "10"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert "--max-message-bytes" in r.stderr and "'10'" in r.stderr
