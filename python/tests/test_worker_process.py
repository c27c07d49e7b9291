"""A real worker subprocess driven over its unix socket with the generated stubs."""

from __future__ import annotations

import json
import os
import signal
import time
import zlib

import grpc
import pytest
from conftest import batch_events

from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.telemetry import _policy

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HOST_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{HOST_SPAN}-01"


def call_req(rid, tool, args=None, **kw):
    return pb.CallRequest(request_id=rid, tool_name=tool,
                          args_json=json.dumps(args or {}).encode(), **kw)


def collect_telemetry(tc, until, timeout=15.0):
    """Read TelemetryBatch messages until until(events, batches) is true."""
    events, batches = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = tc.get(timeout=max(0.1, deadline - time.monotonic()))
        if b is None:
            break
        batches.append(b)
        events.extend(batch_events(b))
        if until(events, batches):
            return events, batches
    raise AssertionError(f"telemetry condition not met; got {len(events)} events "
                         f"{sorted({'.'.join(e.event_parts) for e in events})}")


def ev_name(e):
    return ".".join(e.event_parts)


def test_ready_line_and_describe(worker):
    r = worker.ready
    assert r["worker_id"] == "w-test" and r["protocol"] == 1
    assert r["listen"] == worker.listen and r["pid"] == worker.proc.pid
    # uvloop is a dependency on Linux and runs the loop unless told otherwise.
    assert r["event_loop"] == "uvloop"
    # The cyclic GC is tuned for bursts of buffered events unless told otherwise.
    assert r["gc"] == "tuned"
    stub = worker.connect()
    d = stub.Describe(pb.DescribeRequest(), timeout=10)
    names = [t.name for t in d.tools]
    for n in ["ping", "echo", "add", "sleep", "fail", "stream", "emit_events", "nested_spans",
              "whoami", "log", "text_stats", "predict"]:
        assert n in names
    assert {t.name: t.supports_streaming for t in d.tools}["stream"] is True
    assert d.pid == worker.proc.pid and d.protocol_version == 1 and d.worker_id == "w-test"
    assert stub.Ping(pb.PingRequest(message="hi"), timeout=10).message == "pong: hi"
    assert stub.Heartbeat(pb.HeartbeatRequest(), timeout=10).session_valid


def test_call_stream_concurrent_requests(worker, stream_clients):
    stub = worker.connect()
    sc = stream_clients(stub.CallStream)
    # a slow call first, then fast ones: replies come out of order, matched by id
    sc.send(call_req(1, "sleep", {"ms": 400}))
    for i in range(2, 52):
        sc.send(call_req(i, "add", {"a": i, "b": 1}))
    sc.send(call_req(100, "fail", {"message": "bad things"}))
    sc.send(call_req(101, "nope"))
    sc.send(call_req(102, "stream", {"n": 5}, stream=True))
    sc.send(call_req(103, "async_sleep", {"ms": 50}))
    sc.send(pb.CallRequest(request_id=104, tool_name="echo", args_json=b"[1,2]"))
    sc.send(call_req(105, "sleep", {"ms": 2000}, timeout_ms=100))
    replies = {}
    chunks = []
    order = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            len(replies) == 57 and any(r == 102 for r in replies)):
        r = sc.get(timeout=20)
        assert r is not None, sc.error
        order.append(r.request_id)
        kind = r.WhichOneof("body")
        if kind == "chunk":
            chunks.append((r.chunk.seq, json.loads(r.chunk.data_json)))
        else:
            replies[r.request_id] = r
    for i in range(2, 52):
        assert json.loads(replies[i].result.result_json) == i + 1
    assert order.index(1) > order.index(51)  # the slow call answered last-ish
    assert json.loads(replies[1].result.result_json) == {"slept_ms": 400}
    err = replies[100].error
    assert err.type == "ValueError" and err.message == "bad things"
    assert "Traceback" in err.traceback and "raise ValueError" in err.traceback
    unk = replies[101].error
    assert unk.type == "UnknownTool" and "'nope'" in unk.message and "ping" in unk.message
    assert chunks == [(k, {"i": k}) for k in range(5)]
    assert replies[102].WhichOneof("body") == "end" and replies[102].end.chunks == 5
    assert json.loads(replies[103].result.result_json) == {"slept_ms": 50}
    assert replies[104].error.type == "InvalidArguments"
    assert replies[105].error.type == "Timeout"
    # the worker lives on after errors
    sc.send(call_req(200, "ping"))
    r = sc.get()
    assert r.request_id == 200 and json.loads(r.result.result_json) == {"ok": True}


def test_streaming_error_mid_stream(worker, stream_clients):
    sc = stream_clients(worker.connect().CallStream)
    sc.send(call_req(7, "stream_fail", {"fail_after": 2}, stream=True))
    got = [sc.get() for _ in range(3)]
    assert [g.WhichOneof("body") for g in got] == ["chunk", "chunk", "error"]
    assert got[2].error.type == "RuntimeError"
    sc.send(call_req(8, "astream", {"n": 3}, stream=True))
    got = [sc.get() for _ in range(4)]
    assert [json.loads(g.chunk.data_json) for g in got[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert got[3].end.chunks == 3


def test_unary_execute_tool_and_streaming_rpc(worker):
    _exercise_unary_and_streaming(worker)


def test_standard_asyncio_loop_on_request(start_worker, stream_clients):
    w = start_worker("--telemetry-interval-s", "0",
                     env={"SNAKEPIT_EVENT_LOOP": "asyncio", "SNAKEPIT_GC": "default"})
    assert w.ready["event_loop"] == "asyncio" and w.ready["gc"] == "default"
    _exercise_unary_and_streaming(w)


def _exercise_unary_and_streaming(worker):
    stub = worker.connect()
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="add", args_json=b'{"a":2,"b":3}'),
                         timeout=10)
    assert r.success and json.loads(r.result_json) == 5
    assert r.metadata["worker_id"] == "w-test"
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="fail",
                                               args_json=b'{"message":"x"}'), timeout=10)
    assert not r.success and r.error.type == "ValueError" and r.error_message == "x"
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="whoami"), timeout=10,
                         metadata=[("x-snakepit-correlation-id", "md-cid"),
                                   ("traceparent", TRACEPARENT)])
    who = json.loads(r.result_json)
    assert who["correlation_id"] == "md-cid" and who["trace_id"] == TRACE_ID
    assert who["traceparent"] == TRACEPARENT
    r = stub.ExecuteTool(pb.ExecuteToolRequest(
        tool_name="bytes_echo", binary_parameters={"data": b"\x00\x01\x02"}), timeout=10)
    assert json.loads(r.result_json) == {"size": 3}
    assert r.binary_results["data"] == b"\x00\x01\x02"
    chunks = list(stub.ExecuteStreamingTool(
        pb.ExecuteToolRequest(tool_name="stream", args_json=b'{"n":3}'), timeout=10))
    assert [json.loads(c.data) for c in chunks[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [c.seq for c in chunks[:3]] == [0, 1, 2]
    assert chunks[-1].is_final and not chunks[-1].HasField("error")
    chunks = list(stub.ExecuteStreamingTool(
        pb.ExecuteToolRequest(tool_name="stream_fail", args_json=b'{"fail_after":1}'),
        timeout=10))
    assert chunks[-1].is_final and chunks[-1].error.type == "RuntimeError"


def test_telemetry_batches_carry_call_events_and_correlation(worker, stream_clients):
    stub = worker.connect()
    tc = stream_clients(stub.TelemetryStream)
    tc.send(pb.TelemetryControl(policy=pb.TelemetryPolicy(enabled=True, sampling_rate=1.0,
                                                          version=1)))
    sc = stream_clients(stub.CallStream)
    sc.send(call_req(1, "nested_spans", {"data": "ABC"}, correlation_id="corr-42",
                     traceparent=TRACEPARENT))
    sc.send(call_req(2, "fail", {}, correlation_id="corr-43"))
    sc.send(call_req(3, "whoami", {}, correlation_id="corr-44", traceparent=TRACEPARENT))
    sc.send(call_req(4, "log", {"level": "warning", "message": "hello from tool"},
                     correlation_id="corr-45"))
    replies = {}
    for _ in range(4):
        r = sc.get()
        replies[r.request_id] = r
    who = json.loads(replies[3].result.result_json)
    assert who["correlation_id"] == "corr-44" and who["trace_id"] == TRACE_ID

    def done(events, batches):
        names = {(ev_name(e), e.correlation_id) for e in events}
        logs = [lg for b in batches for lg in b.logs]
        return (("call.stop", "corr-42") in names and ("call.exception", "corr-43") in names
                and ("call.stop", "corr-44") in names
                and ("memory.sampled", "") in names and ("cpu.sampled", "") in names
                and any(lg.message == "hello from tool" for lg in logs))

    events, batches = collect_telemetry(tc, done)
    mine = [e for e in events if e.correlation_id == "corr-42"]
    names = [ev_name(e) for e in mine]
    assert names == ["call.start", "tool.execution.start", "complex_operation.start",
                     "preprocessing.start", "preprocessing.stop", "inference.start",
                     "inference.stop", "complex_operation.stop", "tool.execution.stop",
                     "tool.result_size", "call.stop"]
    by = {ev_name(e): e for e in mine}
    call_start, call_stop = by["call.start"], by["call.stop"]
    assert all(e.trace_id == TRACE_ID for e in mine)
    assert call_start.parent_span_id == int(HOST_SPAN, 16)
    assert call_start.span_id == call_stop.span_id and call_start.span_name == "call"
    # rpc_method: the RPC the call came on (here the unbatched CallStream).
    assert dict(call_start.metadata) == {"command": "nested_spans", "rpc_method": "CallStream",
                                         "worker_id": "w-test"}
    assert call_stop.measurements["duration"].int_value > 0
    assert by["tool.execution.start"].parent_span_id == call_start.span_id
    assert by["tool.execution.start"].metadata["tool"] == "nested_spans"
    assert by["complex_operation.start"].parent_span_id == by["tool.execution.start"].span_id
    # whoami ran inside tool.execution, a child of the call span, a child of the host span
    w = {ev_name(e): e for e in events if e.correlation_id == "corr-44"}
    assert w["tool.execution.start"].span_id == int(who["span_id"], 16)
    assert int(who["parent_span_id"], 16) == w["call.start"].span_id
    assert w["call.start"].parent_span_id == int(HOST_SPAN, 16)
    assert who["current_traceparent"] == f"00-{TRACE_ID}-{who['span_id']}-01"
    exc = [e for e in events if e.correlation_id == "corr-43"]
    assert [ev_name(e) for e in exc] == ["call.start", "tool.execution.start",
                                         "tool.execution.exception", "error.occurred",
                                         "call.exception"]
    assert exc[-1].metadata["error_type"] == "ValueError"
    assert exc[3].metadata["error_type"] == "ValueError"
    assert exc[3].metadata["tool"] == "fail"
    assert exc[3].measurements["count"].int_value == 1
    size = by["tool.result_size"]
    assert size.metadata["tool"] == "nested_spans"
    assert size.measurements["message_size"].int_value == len(replies[1].result.result_json)
    assert exc[2].metadata["error_type"] == "ValueError"
    mem = next(e for e in events if ev_name(e) == "memory.sampled")
    assert mem.measurements["rss_bytes"].int_value > 1_000_000
    assert mem.measurements["vms_bytes"].int_value >= mem.measurements["rss_bytes"].int_value
    cpu = next(e for e in events if ev_name(e) == "cpu.sampled")
    assert cpu.measurements["cpu_percent"].float_value >= 0.0
    log = next(lg for b in batches for lg in b.logs if lg.message == "hello from tool")
    assert log.level == "warning" and log.correlation_id == "corr-45"
    assert log.logger == "snakepit_bridge.adapters.showcase"
    assert batches[-1].policy_version == 1 and batches[-1].worker_id == "w-test"


def test_events_before_attach_are_buffered_then_flushed(worker, stream_clients):
    stub = worker.connect()
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="emit_events",
                                               args_json=b'{"count": 500, "name": "early"}',
                                               correlation_id="early-cid"), timeout=10)
    assert r.success
    tc = stream_clients(stub.TelemetryStream)
    tc.send(pb.TelemetryControl(policy=pb.TelemetryPolicy(enabled=True, sampling_rate=1.0)))
    events, _ = collect_telemetry(
        tc, lambda evs, b: sum(ev_name(e) == "early" for e in evs) >= 500)
    early = [e for e in events if ev_name(e) == "early"]
    assert len(early) == 500 and all(e.correlation_id == "early-cid" for e in early)


def test_first_control_is_applied_before_the_first_batch(worker, stream_clients):
    """The host counts the telemetry stream open at its first batch and may
    call at once: by then the worker runs the host's policy, not its own."""
    stub = worker.connect()
    tc = stream_clients(stub.TelemetryStream)
    # Nothing is sent while the first control has not come (a batch would
    # otherwise go out at once, reporting the worker's own policy).
    time.sleep(0.3)
    tc.send(pb.TelemetryControl(policy=pb.TelemetryPolicy(enabled=True, sampling_rate=1.0,
                                                          version=7)))
    first = tc.get(timeout=10)
    assert first is not None and first.policy_version == 7


def test_burst_accounting_and_sampling_policy_cuts_rate(worker, stream_clients):
    stub = worker.connect()
    tc = stream_clients(stub.TelemetryStream)
    # only the test's own events may fill the buffer: everything else is filtered
    deny = ["python.call.*", "python.tool.*", "python.memory.*", "python.cpu.*"]
    tc.send(pb.TelemetryControl(policy=pb.TelemetryPolicy(enabled=True, sampling_rate=1.0,
                                                          version=1, deny=deny)))
    collect_telemetry(tc, lambda e, b: b[-1].policy_version == 1)
    # burst: every event is either delivered or counted as a drop
    n = 20_000
    r = stub.ExecuteTool(pb.ExecuteToolRequest(
        tool_name="emit_events", args_json=json.dumps({"count": n, "name": "burst"}).encode()),
        timeout=30)
    assert r.success

    def settled(events, batches):
        got = sum(ev_name(e) == "burst" for e in events)
        return got + batches[-1].drops.buffer_full >= n

    events, batches = collect_telemetry(tc, settled, timeout=30)
    delivered = sum(ev_name(e) == "burst" for e in events)
    assert delivered + batches[-1].drops.buffer_full == n
    # sampling: 10% for the "sampled" events, by policy pattern. Events of one call
    # share its correlation id, so whole calls are kept or dropped, exactly as the
    # shared rule predicts.
    tc.send(pb.TelemetryControl(policy=pb.TelemetryPolicy(
        enabled=True, sampling_rate=1.0, version=2, deny=deny,
        pattern_rates=[pb.PatternRate(pattern="python.sampled", rate=0.1)])))
    collect_telemetry(tc, lambda e, b: b[-1].policy_version == 2)
    base = batches[-1].drops.sampled_out
    sc = stream_clients(stub.CallStream)
    calls = 300
    for i in range(calls):
        sc.send(call_req(i + 1, "emit_events", {"count": 5, "name": "sampled"},
                         correlation_id=f"s-{i}"))
    for _ in range(calls):
        assert sc.get().WhichOneof("body") == "result"

    def sampled_settled(events, batches):
        got = sum(ev_name(e) == "sampled" for e in events)
        return got + batches[-1].drops.sampled_out - base >= 5 * calls

    events, batches = collect_telemetry(tc, sampled_settled, timeout=30)
    kept = [e.correlation_id for e in events if ev_name(e) == "sampled"]
    assert len(kept) + batches[-1].drops.sampled_out - base == 5 * calls
    expected = {f"s-{i}" for i in range(calls)
                if _policy.sampling_keep(zlib.crc32(f"s-{i}".encode()), 0.1)}
    assert set(kept) == expected and len(kept) == 5 * len(expected)
    assert 10 <= len(expected) <= 60


def test_legacy_stream_telemetry(worker, stream_clients):
    stub = worker.connect()
    tc = stream_clients(stub.StreamTelemetry)
    tc.send(pb.TelemetryControl(toggle=pb.TelemetryToggle(enabled=True)))
    tc.send(pb.TelemetryControl(filter=pb.TelemetryEventFilter(deny=["python.memory.*",
                                                                     "python.cpu.*"])))
    tc.send(pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(sampling_rate=2.0)))
    time.sleep(0.2)
    stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="ping", correlation_id="legacy"),
                     timeout=10)
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        e = tc.get()
        assert isinstance(e, pb.TelemetryEvent)
        seen.append(ev_name(e))
        assert not ev_name(e).startswith(("memory", "cpu"))
        if ev_name(e) == "call.stop" and e.correlation_id == "legacy":
            break
    assert "call.start" in seen and "call.stop" in seen
    # the malformed sampling update did not kill the stream
    assert tc.error is None


def test_sigterm_graceful_with_call_in_flight(worker, stream_clients):
    sc = stream_clients(worker.connect().CallStream)
    sc.send(call_req(1, "sleep", {"ms": 800}))
    time.sleep(0.3)
    worker.proc.send_signal(signal.SIGTERM)
    r = sc.get(timeout=10)
    assert r.request_id == 1 and json.loads(r.result.result_json) == {"slept_ms": 800}
    assert worker.wait(timeout=10) == 0
    assert worker.stdout_rest(timeout=1) == []


def test_sigterm_grace_expires(start_worker, stream_clients):
    w = start_worker("--grace-s", "0.3")
    sc = stream_clients(w.connect().CallStream)
    sc.send(call_req(1, "sleep", {"ms": 10_000}))
    time.sleep(0.3)
    t0 = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5


def test_exit_on_stdin_eof(start_worker):
    w = start_worker("--watch-stdin")
    assert w.proc.poll() is None
    w.proc.stdin.close()
    assert w.wait(timeout=10) == 0


def test_exit_when_parent_dies(start_worker, tmp_path):
    import subprocess
    import sys

    # a middle process starts the worker with --parent-pid <itself>, prints the
    # worker's ready line, then dies; the worker must notice and exit
    script = tmp_path / "parent.py"
    sock_dir = tmp_path / "s"
    sock_dir.mkdir()
    script.write_text(f"""
import os, subprocess, sys
p = subprocess.Popen([sys.executable, "-m", "snakepit_bridge.worker", "--adapter",
    "snakepit_bridge.adapters.showcase:ShowcaseAdapter", "--listen",
    "unix:{sock_dir}/w.sock", "--worker-id", "orphan", "--parent-pid", str(os.getpid())],
    stdout=subprocess.PIPE)
print(p.stdout.readline().decode().strip(), flush=True)
os._exit(0)
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=30,
                         env={**os.environ})
    line = out.stdout.decode().strip()
    assert line.startswith("SNAKEPIT_READY"), out.stderr.decode()
    pid = json.loads(line.split(" ", 1)[1])["pid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("orphaned worker did not exit")


def test_bad_adapter_exits_3(start_worker):
    for adapter, needle in [
        ("no_such_module_xyz:Adapter", "No module named 'no_such_module_xyz'"),
        ("snakepit_bridge.adapters.showcase:NoSuchClass", "has no attribute 'NoSuchClass'"),
        ("snakepit_bridge.adapters.showcase", "must look like"),
    ]:
        w = start_worker(adapter=adapter, expect_ready=False)
        assert w.wait(timeout=20) == 3
        err = w.stderr()
        first = next(ln for ln in err.splitlines() if ln.startswith("SNAKEPIT_ADAPTER_ERROR: "))
        assert needle in first
        assert "Traceback (most recent call last)" in err
        assert w.stdout_rest(timeout=1) == []


def test_adapter_import_raising_exits_3(start_worker, tmp_path):
    (tmp_path / "broken_adapter_mod.py").write_text("raise RuntimeError('import boom')\n")
    w = start_worker(adapter="broken_adapter_mod:A", expect_ready=False,
                     extra_path=tmp_path)
    assert w.wait(timeout=20) == 3
    err = w.stderr()
    assert "SNAKEPIT_ADAPTER_ERROR: " in err and "import boom" in err
    assert "RuntimeError" in err and "Traceback" in err


def test_token_required(start_worker, stream_clients):
    w = start_worker(token="s3cret")
    stub = w.connect()
    for md in ([], [("x-snakepit-token", "wrong")]):
        with pytest.raises(grpc.RpcError) as ei:
            stub.Ping(pb.PingRequest(), metadata=md, timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as ei:
            stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="ping"), metadata=md, timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    sc = stream_clients(stub.CallStream)
    sc.send(call_req(1, "ping"))
    assert sc.get() is None
    assert sc.error.code() == grpc.StatusCode.UNAUTHENTICATED
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="ping"), metadata=w.md(), timeout=10)
    assert r.success
    sc2 = stream_clients(stub.CallStream, metadata=w.md())
    sc2.send(call_req(1, "ping"))
    assert json.loads(sc2.get().result.result_json) == {"ok": True}


def test_print_in_tool_does_not_reach_stdout(tmp_path, start_worker):
    (tmp_path / "printing_adapter_mod.py").write_text(
        "from snakepit_bridge import BaseAdapter, tool\n"
        "print('import-time print')\n"
        "class A(BaseAdapter):\n"
        "    @tool(description='prints')\n"
        "    def shout(self):\n"
        "        print('tool print')\n"
        "        return 1\n")
    w = start_worker(adapter="printing_adapter_mod:A",
                     extra_path=tmp_path)
    r = w.connect().ExecuteTool(pb.ExecuteToolRequest(tool_name="shout"), timeout=10)
    assert r.success
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    assert w.stdout_rest(timeout=1) == []
    assert "tool print" in w.stderr() and "import-time print" in w.stderr()


def test_tcp_listen_with_port_zero_and_token(start_worker):
    w = start_worker(listen="127.0.0.1:0", token="tcp-secret")
    host, port = w.ready["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    stub = w.connect()
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="add", args_json=b'{"a":1,"b":2}'),
                         metadata=w.md(), timeout=10)
    assert json.loads(r.result_json) == 3
    with pytest.raises(grpc.RpcError) as ei:
        stub.Describe(pb.DescribeRequest(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
