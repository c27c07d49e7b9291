"""CallBatchStream: batched calls and replies, call telemetry carried on the reply."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from snakepit_bridge import _wire, telemetry
from snakepit_bridge import worker as worker_mod
from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.telemetry import _worker_api as tw

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HOST_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{HOST_SPAN}-01"
SHOWCASE = "snakepit_bridge.adapters.showcase:ShowcaseAdapter"

# CallTelemetry.emit with every event kept (15).
ALL_CALL_EVENTS = _wire.CALL_START | _wire.CALL_END | _wire.TOOL_START | _wire.TOOL_END


def req(rid, tool, args=None, **kw):
    return pb.CallRequest(request_id=rid, tool_name=tool,
                          args_json=json.dumps(args or {}).encode(), **kw)


def collect(sc, until, timeout=20.0):
    """Replies (flattened from CallReplyBatch messages) until until(replies)."""
    replies, batches = [], 0
    deadline = time.monotonic() + timeout
    while not until(replies):
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(replies)} replies"
        b = sc.get(timeout=left)
        assert b is not None, sc.error
        batches += 1
        replies.extend(b.replies)
    return replies, batches


@pytest.mark.parametrize("transport", ["grpc.aio", "native"])
def test_a_batch_of_mixed_calls_is_answered_in_batches(worker, stream_clients, transport):
    stub = worker.connect() if transport == "grpc.aio" else worker.connect_calls()
    sc = stream_clients(stub.CallBatchStream)
    calls = [req(i, "add", {"a": i, "b": 1}, correlation_id=f"c-{i}", traceparent=TRACEPARENT)
             for i in range(1, 101)]
    calls += [
        req(200, "sleep", {"ms": 50}),
        req(201, "fail", {"message": "bad"}),
        req(202, "nope"),
        req(203, "stream", {"n": 3}, stream=True),
        req(204, "add", {"a": 1}),  # inline tool raising TypeError
    ]
    sc.send(pb.CallBatch(calls=calls))
    replies, batches = collect(sc, lambda rs: sum(
        r.WhichOneof("body") in ("result", "error", "end") for r in rs) >= 105)
    # 105 calls in far fewer messages: the 100 inline calls share one reply batch.
    assert batches < 20
    final = {r.request_id: r for r in replies if r.WhichOneof("body") != "chunk"}
    chunks = [r.chunk.seq for r in replies if r.WhichOneof("body") == "chunk"]
    for i in range(1, 101):
        r = final[i]
        assert json.loads(r.result.result_json) == i + 1
        t = r.telemetry
        assert t.emit == ALL_CALL_EVENTS
        # The trace is the traceparent's, which the host knows: not repeated.
        assert t.trace_id == "" and t.call_parent_span_id == int(HOST_SPAN, 16)
        assert t.call_span_id and t.tool_span_id and t.tool_span_id != t.call_span_id
        assert t.call_start_ns <= t.tool_start_ns
        assert t.call_start_ns > 1_600_000_000 * 10**9
        assert t.call_duration_ns >= t.tool_duration_ns > 0
        assert not t.error_type and not t.tool_error_type
    assert json.loads(final[200].result.result_json) == {"slept_ms": 50}
    assert final[201].error.type == "ValueError"
    assert final[202].error.type == "UnknownTool"
    assert final[203].WhichOneof("body") == "end" and chunks == [0, 1, 2]
    # Only inline calls carry their telemetry; the others use the telemetry stream.
    for rid in (200, 201, 202, 203):
        assert not final[rid].HasField("telemetry")
    bad = final[204]
    assert bad.error.type == "TypeError" and "Traceback" in bad.error.traceback
    assert bad.telemetry.error_type == "TypeError"
    assert bad.telemetry.tool_error_type == "TypeError"
    assert "b" in bad.telemetry.tool_error_message
    assert bad.telemetry.emit == ALL_CALL_EVENTS
    # A batch of one is answered at once.
    sc.send(pb.CallBatch(calls=[req(300, "ping")]))
    replies, _ = collect(sc, lambda rs: len(rs) >= 1)
    assert replies[0].request_id == 300
    assert json.loads(replies[0].result.result_json) == {"ok": True}


def _dispatcher():
    _, tools = worker_mod.load_adapter(SHOWCASE)
    return worker_mod.Dispatcher(tools, "w-inproc", 1), tools


def test_inline_call_applies_the_policy_and_counts_drops():
    d, tools = _dispatcher()
    call = req(7, "whoami", correlation_id="cid-7", traceparent=TRACEPARENT)
    tw.set_policy(tw.Policy(deny=["python.call.*"]))
    before = tw.drop_counts_dict()
    reply = pb.CallReply.FromString(d.call_inline_wire(tools["whoami"], call))
    after = tw.drop_counts_dict()
    # tool events kept, call events filtered
    assert reply.telemetry.emit == _wire.TOOL_START | _wire.TOOL_END
    assert after["filtered"] - before["filtered"] == 2
    assert telemetry.buffered() == 0  # nothing went through the event buffer
    # Inside the tool the correlation id and the tool span were current.
    seen = json.loads(reply.result.result_json)
    assert seen["correlation_id"] == "cid-7" and seen["trace_id"] == TRACE_ID
    assert int(seen["span_id"], 16) == reply.telemetry.tool_span_id
    assert int(seen["parent_span_id"], 16) == reply.telemetry.call_span_id
    assert reply.telemetry.trace_id == ""  # the traceparent's trace
    # Without a traceparent the worker starts a trace and says which.
    reply = pb.CallReply.FromString(d.call_inline_wire(tools["whoami"], req(9, "whoami")))
    seen = json.loads(reply.result.result_json)
    assert len(seen["trace_id"]) == 32 and reply.telemetry.trace_id == seen["trace_id"]
    assert reply.telemetry.call_parent_span_id == 0
    tw.set_policy(tw.Policy(enabled=False))
    reply = pb.CallReply.FromString(d.call_inline_wire(tools["ping"], req(8, "ping")))
    assert not reply.HasField("telemetry")
    assert tw.drop_counts_dict()["disabled"] - after["disabled"] == 4


def test_reply_encoding_matches_the_generated_classes():
    tel = _wire.call_telemetry(15, 1, 2, 3, 4, 2**64 - 1, 5, TRACE_ID, 6, "E", "E2", "msg é")
    replies = [
        _wire.reply_result(1, b'{"a":1}', tel, {"blob": b"\x00\xff"}),
        _wire.reply_error(2**40, "T", "m", "tb"),
        _wire.reply_result(3, b"null"),
    ]
    b = pb.CallReplyBatch.FromString(_wire.reply_batch(replies))
    assert [r.request_id for r in b.replies] == [1, 2**40, 3]
    assert b.replies[0].result.binary_results["blob"] == b"\x00\xff"
    t = b.replies[0].telemetry
    assert (t.emit, t.call_start_ns, t.call_duration_ns, t.tool_start_ns,
            t.tool_duration_ns) == (15, 1, 2, 3, 4)
    assert (t.call_span_id, t.call_parent_span_id, t.tool_span_id) == (2**64 - 1, 5, 6)
    assert (t.trace_id, t.error_type, t.tool_error_type, t.tool_error_message) == (
        TRACE_ID, "E", "E2", "msg é")
    assert b.replies[1].error.type == "T" and b.replies[1].error.traceback == "tb"


def test_the_one_pack_telemetry_field_is_the_two_encoders_byte_for_byte():
    u64 = 2**64 - 1
    cases = 0
    for rid in (0, 1, 127, 128, 300, 2**40, u64):
        for rj in (b"1", b'{"ok":true}', b"x" * 125, b"x" * 126, b"x" * 4000):
            for fields in ((15, 1, 2, 3, 4, 5, 6, 7),
                           (15, -(2**63), u64, 2**63 - 1, 0, u64, u64, u64),
                           (3, 0, 0, 1, 0, 1, 1, 1)):
                emit, cs, cd, ts, td, csid, parent, tsid = fields
                one = _wire.reply_result(rid, rj) + _wire.call_telemetry_field(*fields)
                tel = _wire.call_telemetry(emit, cs, cd, ts, td, csid, parent, "", tsid)
                assert one == _wire.reply_result(rid, rj, tel), (rid, rj, fields)
                r = pb.CallReply.FromString(one)
                assert (r.request_id, r.result.result_json) == (rid, rj)
                t = r.telemetry
                assert (t.emit, t.call_start_ns, t.call_duration_ns, t.tool_start_ns,
                        t.tool_duration_ns, t.call_span_id, t.call_parent_span_id,
                        t.tool_span_id) == fields
                cases += 1
    assert cases == 7 * 5 * 3
    # The small-result path of reply_result agrees with the generated classes.
    for rid, rj in ((0, b"1"), (5, b"x" * 125), (5, b"x" * 126), (2**40, b"")):
        r = pb.CallReply.FromString(_wire.reply_result(rid, rj))
        assert (r.request_id, r.result.result_json) == (rid, rj)


def test_emit_bits_are_the_protos():
    # The proto's CallTelemetry comment is the contract the host reads the bits by.
    proto = (Path(__file__).resolve().parents[2] / "proto" / "snakepit_bridge.proto").read_text()
    text = " ".join(re.search(r"`emit` says.*?\(bits:(.*?)\)", proto, re.S).group(1).split())
    # "2 call.stop/exception": the name up to the slash.
    bits = {name: int(bit) for bit, name in re.findall(r"(\d+) ([\w.]+)", text)}
    assert bits == {"call.start": _wire.CALL_START, "call.stop": _wire.CALL_END,
                    "tool.execution.start": _wire.TOOL_START,
                    "tool.execution.stop": _wire.TOOL_END}
