"""The native server (snakepit_bridge._native): CallBatchStream served from
Rust inside the worker on ``<socket>.calls`` and, on a Unix socket, every
RPC of the main socket too (no grpc.aio server, no grpc import)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import time

import grpc
import pytest
from conftest import PYTHON_DIR, calls_channel

from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.generated import snakepit_bridge_pb2_grpc as pbg


def req(rid, tool, args=None, **kw):
    return pb.CallRequest(request_id=rid, tool_name=tool,
                          args_json=json.dumps(args or {}).encode(), **kw)


def test_the_ready_line_and_describe_name_the_call_socket(worker):
    calls = worker.ready["calls"]
    assert calls == f"unix:{worker.sock}.calls"
    assert os.path.exists(worker.sock + ".calls")
    info = worker.connect().Describe(pb.DescribeRequest(), timeout=10)
    assert info.call_address == calls


def assert_said_once(w, why: str) -> None:
    """The worker's stderr has one "not started" warning, naming ``why``."""
    lines = [ln for ln in w.stderr().splitlines() if "native server not started" in ln]
    assert len(lines) == 1 and why in lines[0] and "WARNING" in lines[0], w.stderr()


def test_switched_off_the_worker_serves_calls_with_grpc_aio(start_worker, stream_clients):
    w = start_worker(env={"SNAKEPIT_NATIVE_CALLS": "0"})
    assert w.ready["calls"] == ""
    assert_said_once(w, "disabled by SNAKEPIT_NATIVE_CALLS=0")
    assert not os.path.exists(w.sock + ".calls")
    assert w.connect().Describe(pb.DescribeRequest(), timeout=10).call_address == ""
    sc = stream_clients(w.connect().CallBatchStream)
    sc.send(pb.CallBatch(calls=[req(1, "ping")]))
    b = sc.get(timeout=10)
    assert b.replies[0].request_id == 1


def test_the_call_socket_serves_only_call_batch_stream(worker):
    stub = worker.connect_calls()
    with pytest.raises(grpc.RpcError) as e:
        stub.Ping(pb.PingRequest(message="x"), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "main socket" in e.value.details()


def test_a_closed_request_side_ends_the_stream_after_its_replies(worker):
    stub = worker.connect_calls()
    # Every request is sent, then the request side closes: the slow call is
    # still answered, then the stream ends with OK.
    batches = iter([pb.CallBatch(calls=[req(1, "sleep", {"ms": 100}), req(2, "ping")])])
    call = stub.CallBatchStream(batches, timeout=20)
    replies = [r for b in call for r in b.replies]
    assert sorted(r.request_id for r in replies) == [1, 2]
    assert call.code() == grpc.StatusCode.OK


def test_an_undecodable_batch_is_dropped_and_the_stream_goes_on(worker):
    channel = calls_channel(worker.ready["calls"])
    try:
        raw = channel.stream_stream("/snakepit.bridge.BridgeService/CallBatchStream",
                                    request_serializer=lambda b: b,
                                    response_deserializer=pb.CallReplyBatch.FromString)
        good = pb.CallBatch(calls=[req(7, "add", {"a": 1, "b": 2})]).SerializeToString()
        call = raw(iter([b"\x0a\xff\xff\xff", good]), timeout=20)
        replies = [r for b in call for r in b.replies]
        assert [r.request_id for r in replies] == [7]
        assert json.loads(replies[0].result.result_json) == 3
    finally:
        channel.close()
    assert "undecodable CallBatch dropped" in worker.stderr()


def test_close_returns_while_a_client_keeps_its_stream_open(tmp_path):
    from snakepit_bridge import _native

    path = str(tmp_path / "c.sock")
    server = _native.CallServer(path)
    channel = calls_channel("unix:" + path)
    try:
        requests = queue.Queue()
        call = pbg.BridgeServiceStub(channel).CallBatchStream(iter(requests.get, None),
                                                             timeout=20)
        requests.put(pb.CallBatch(calls=[req(1, "ping")]))
        deadline = time.monotonic() + 10
        taken = []
        while not taken and time.monotonic() < deadline:
            taken = server.take()
            time.sleep(0.01)
        [(sid, data)] = taken
        assert pb.CallBatch.FromString(data).calls[0].request_id == 1
        assert server.open_streams() == 1
        # The client never closes its side; close still returns (it waits
        # for the server at most a second).
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 3
        assert server.open_streams() == 0
        assert not server.send(sid, b"")  # the stream is gone
        # The stream ended with OK and no replies.
        assert list(call) == [] and call.code() == grpc.StatusCode.OK
    finally:
        channel.close()


def test_a_socket_path_too_long_for_the_call_socket_sends_calls_to_the_main_socket(
        start_worker, stream_clients, tmp_path_factory):
    # A Unix socket path holds at most 107 bytes: the worker's own path fits,
    # its ".calls" sibling does not.
    base = str(tmp_path_factory.mktemp("long"))
    sock = os.path.join(base, "w" * (104 - len(base) - 1))
    assert len(sock) == 104
    w = start_worker(listen=f"unix:{sock}")
    assert w.ready["calls"] == ""
    said = [ln for ln in w.stderr().splitlines() if "no call socket" in ln]
    assert len(said) == 1 and f"{sock}.calls is 110 bytes, over the 107" in said[0], said
    assert "calls go to the main socket" in said[0] and "WARNING" in said[0]
    # The main socket, served natively, takes the calls.
    assert "native server not started" not in w.stderr()
    sc = stream_clients(w.connect().CallBatchStream)
    sc.send(pb.CallBatch(calls=[req(1, "add", {"a": 1, "b": 1})]))
    b = sc.get(timeout=10)
    assert json.loads(b.replies[0].result.result_json) == 2


def test_a_stale_call_socket_is_replaced_and_calls_stay_native(start_worker, stream_clients,
                                                               tmp_path_factory):
    # A worker killed with SIGKILL leaves <socket>.calls behind: a socket
    # file nobody listens on.
    import socket

    sock = os.path.join(str(tmp_path_factory.mktemp("stale")), "w.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock + ".calls")
    stale.close()
    assert os.path.exists(sock + ".calls")
    w = start_worker(listen=f"unix:{sock}")
    assert w.ready["calls"] == f"unix:{sock}.calls"
    assert "grpc.aio" not in w.stderr()
    sc = stream_clients(w.connect_calls().CallBatchStream)
    sc.send(pb.CallBatch(calls=[req(1, "add", {"a": 2, "b": 3})]))
    b = sc.get(timeout=10)
    assert json.loads(b.replies[0].result.result_json) == 5


def test_a_package_without_the_native_module_says_it_is_not_built(start_worker, tmp_path):
    # The package as a pure-Python copy would install it: no _native module.
    shutil.copytree(PYTHON_DIR / "snakepit_bridge", tmp_path / "snakepit_bridge",
                    ignore=shutil.ignore_patterns("_native*", "__pycache__"))
    w = start_worker(extra_path=tmp_path)
    assert w.ready["calls"] == ""
    # The ImportError names the package it looked in: the copy.
    assert_said_once(w, "snakepit_bridge._native is not built")
    assert_said_once(w, f"{tmp_path}/snakepit_bridge/__init__.py")


def test_on_tcp_no_native_calls_is_by_design_and_no_warning(start_worker):
    w = start_worker("--stderr-log-level", "info", listen="127.0.0.1:0")
    assert w.ready["calls"] == ""
    err = w.stderr()
    assert "native server not started" not in err, err
    info = [ln for ln in err.splitlines() if "native server serves Unix sockets only" in ln]
    assert len(info) == 1 and "INFO" in info[0], err


# --- the main socket, served natively ----------------------------------------


def test_the_main_socket_answers_ping_and_describe_without_grpc_aio(worker):
    stub = worker.connect()
    assert stub.Ping(pb.PingRequest(message="hi"), timeout=10).message == "pong: hi"
    info = stub.Describe(pb.DescribeRequest(), timeout=10)
    assert info.worker_id == worker.worker_id and info.pid == worker.ready["pid"]
    assert "add" in [t.name for t in info.tools]
    assert "grpc.aio" not in worker.stderr()


def test_the_main_socket_serves_the_compatibility_rpcs(worker):
    stub = worker.connect()
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="add",
                                                args_json=b'{"a": 2, "b": 5}'), timeout=10)
    assert r.success and json.loads(r.result_json) == 7
    chunks = list(stub.ExecuteStreamingTool(pb.ExecuteToolRequest(
        tool_name="stream", args_json=b'{"n": 3}'), timeout=10))
    assert chunks[-1].is_final and len(chunks) == 4, chunks


def test_an_unknown_method_on_the_main_socket_is_unimplemented_and_named(worker):
    channel = calls_channel(worker.listen)
    try:
        rpc = channel.unary_unary("/snakepit.bridge.BridgeService/NoSuchRpc",
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            rpc(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "NoSuchRpc" in e.value.details()
        # The worker goes on serving.
        assert worker.connect().Ping(pb.PingRequest(message="x"), timeout=10).message
    finally:
        channel.close()


def test_an_undecodable_request_on_the_main_socket_is_an_internal_error_naming_it(worker):
    channel = calls_channel(worker.listen)
    try:
        rpc = channel.unary_unary("/snakepit.bridge.BridgeService/Ping",
                                  request_serializer=lambda b: b,
                                  response_deserializer=pb.PingResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            rpc(b"\x0a\xff\xff\xff", timeout=10)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        assert "PingRequest" in e.value.details()
        assert rpc(pb.PingRequest(message="ok").SerializeToString(), timeout=10).message
    finally:
        channel.close()


def test_many_metadata_entries_reach_the_tool_and_too_many_are_refused(worker):
    stub = worker.connect()
    # 100 entries before the correlation id, and a 7 kB value: every one
    # reaches Python (the correlation id is the last).
    metadata = [(f"x-junk-{i}", "v" * 20) for i in range(100)] + [("x-big", "b" * 7000)]
    metadata.append(("x-snakepit-correlation-id", "cid-after-junk"))
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="whoami", args_json=b"{}"),
                         metadata=metadata, timeout=10)
    assert r.success and json.loads(r.result_json)["correlation_id"] == "cid-after-junk"
    # Over HTTP/2's 16 KiB header list: refused before the RPC exists, and
    # the worker goes on serving.
    huge = [(f"x-junk-{i}", "v" * 100) for i in range(300)]
    with pytest.raises(grpc.RpcError) as e:
        stub.Ping(pb.PingRequest(message="x"), metadata=huge, timeout=10)
    assert e.value.code() != grpc.StatusCode.OK
    channel = calls_channel(worker.listen)
    try:
        fresh = pbg.BridgeServiceStub(channel)
        assert fresh.Ping(pb.PingRequest(message="x"), timeout=10).message == "pong: x"
    finally:
        channel.close()


def test_a_correlation_id_in_metadata_reaches_the_tool_on_the_main_socket(worker):
    stub = worker.connect()
    r = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="whoami", args_json=b"{}"),
                         metadata=[("x-snakepit-correlation-id", "cid-native-1")], timeout=10)
    assert r.success, r
    assert json.loads(r.result_json)["correlation_id"] == "cid-native-1"


def test_a_telemetry_stream_on_the_main_socket_carries_the_worker_events(worker):
    stub = worker.connect()
    controls: queue.Queue = queue.Queue()
    stream = stub.TelemetryStream(iter(controls.get, None), timeout=20)
    controls.put(pb.TelemetryControl())
    stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="add", args_json=b'{"a": 1, "b": 2}'),
                     timeout=10)
    names = set()
    try:
        for batch in stream:
            names.update(".".join(e.event_parts) for e in batch.events)
            if any(n.startswith("tool.") for n in names):
                break
    finally:
        controls.put(None)
        stream.cancel()
    assert any(n.startswith("tool.") for n in names), names


def test_a_live_main_socket_is_not_taken_over(start_worker, tmp_path_factory):
    first = start_worker()
    second = start_worker(listen=first.listen, expect_ready=False)
    assert second.wait(timeout=20) == 1
    assert "SNAKEPIT_LISTEN_ERROR" in second.stderr() and first.listen in second.stderr()
    assert first.connect().Ping(pb.PingRequest(message="x"), timeout=10).message


def test_a_stale_main_socket_is_replaced(start_worker, tmp_path_factory):
    import socket

    sock = os.path.join(str(tmp_path_factory.mktemp("stalemain")), "w.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)
    stale.close()
    w = start_worker(listen=f"unix:{sock}")
    assert w.connect().Ping(pb.PingRequest(message="x"), timeout=10).message == "pong: x"


def vm_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_telemetry_client_that_stops_reading_bounds_the_worker_memory(worker):
    # The host stops reading its telemetry stream (stalled): the worker's
    # stream waits for it, as a grpc.aio write would, so events pile up in
    # the bounded telemetry buffer, whose drops are counted, and not in
    # the server's reply queue.
    stub = worker.connect()
    controls: queue.Queue = queue.Queue()
    stream = stub.TelemetryStream(iter(controls.get, None), timeout=120)
    controls.put(pb.TelemetryControl())
    pid = worker.ready["pid"]
    before = vm_rss_mib(pid)
    calls = 0
    try:
        # About 60 MB of encoded events per round (events of alternating
        # metadata do not fold into runs): 12 rounds are 700 MB that would
        # wait in memory if nothing held the stream back.
        for _ in range(12):
            r = stub.ExecuteTool(pb.ExecuteToolRequest(
                tool_name="emit_events",
                args_json=b'{"count": 400000, "vary_duration": true, '
                          b'"alternate_metadata": true}'), timeout=60)
            assert r.success, r
            calls += 1
        grown = vm_rss_mib(pid) - before
        assert grown < 200, f"the worker grew by {grown:.0f} MiB"
        # Reading again: the stream goes on, and the events that did not
        # fit in the buffer are counted as dropped.
        dropped = 0
        for batch in stream:
            dropped = batch.drops.buffer_full
            if dropped:
                break
        assert dropped > 0
    finally:
        controls.put(None)
        stream.cancel()
    assert calls == 12


def telemetry_events(stub):
    """A TelemetryStream read by a thread: (events seen so far, stop)."""
    import threading

    controls: queue.Queue = queue.Queue()
    stream = stub.TelemetryStream(iter(controls.get, None), timeout=60)
    controls.put(pb.TelemetryControl())
    seen: list = []

    def read():
        try:
            for batch in stream:
                seen.extend(batch.events)
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()

    def stop():
        controls.put(None)
        stream.cancel()

    return seen, stop


def test_a_cancelled_rpc_on_the_main_socket_cancels_its_call_in_the_worker(worker):
    stub = worker.connect()
    seen, stop = telemetry_events(stub)
    try:
        # An async tool that would sleep a minute; the client gives up.
        future = stub.ExecuteTool.future(pb.ExecuteToolRequest(
            tool_name="async_sleep", args_json=b'{"ms": 60000}'), timeout=60)
        deadline = time.monotonic() + 10
        while not any(".".join(e.event_parts) == "call.start" for e in seen):
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.02)
        future.cancel()

        def ended():
            return [e for e in seen if ".".join(e.event_parts) in ("call.stop", "call.exception")
                    and e.metadata.get("command") == "async_sleep"]

        deadline = time.monotonic() + 10
        while not ended():
            assert time.monotonic() < deadline, "the call went on after the client left"
            time.sleep(0.02)
        # The worker goes on serving.
        assert stub.Ping(pb.PingRequest(message="x"), timeout=10).message == "pong: x"
    finally:
        stop()
