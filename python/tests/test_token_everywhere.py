"""The worker's token guards every socket it serves, and a worker reachable
from the network refuses to start without one."""

from __future__ import annotations

import json
import os
import signal

import grpc
import pytest

from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.worker import is_loopback_listen

TOUCH_ADAPTER = (
    "import pathlib\n"
    "from snakepit_bridge import BaseAdapter, tool\n"
    "class Toucher(BaseAdapter):\n"
    "    @tool(description='creates a file: proof that the tool ran')\n"
    "    def touch(self, path: str) -> dict:\n"
    "        pathlib.Path(path).write_text('ran')\n"
    "        return {'touched': path}\n"
)


@pytest.fixture
def toucher(tmp_path, start_worker):
    (tmp_path / "toucher_mod.py").write_text(TOUCH_ADAPTER)
    return start_worker(adapter="toucher_mod:Toucher", extra_path=tmp_path, token="s3cret")


def _call_batch(stub, path, metadata):
    batch = pb.CallBatch(calls=[pb.CallRequest(
        request_id=1, tool_name="touch", args_json=json.dumps({"path": path}).encode())])
    call = stub.CallBatchStream(iter([batch]), metadata=metadata, timeout=20)
    return [r for b in call for r in b.replies]


@pytest.mark.parametrize("metadata", [[], [("x-snakepit-token", "wrong")],
                                      [("x-snakepit-token", "s3cre")],
                                      [("x-snakepit-token", "s3cret-and-more")]],
                         ids=["none", "wrong", "prefix", "longer"])
def test_the_native_call_socket_refuses_a_missing_or_wrong_token(toucher, tmp_path, metadata):
    target = str(tmp_path / "ran.txt")
    stub = toucher.connect_calls()
    with pytest.raises(grpc.RpcError) as ei:
        _call_batch(stub, target, metadata)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-snakepit-token" in ei.value.details()
    assert not os.path.exists(target), "the tool ran without the token"
    # Every RPC, not only CallBatchStream: no path reveals anything without it.
    with pytest.raises(grpc.RpcError) as ei:
        stub.Ping(pb.PingRequest(message="x"), metadata=metadata, timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_native_call_socket_serves_the_right_token(toucher, tmp_path):
    target = str(tmp_path / "ran.txt")
    replies = _call_batch(toucher.connect_calls(), target, toucher.md())
    assert [r.request_id for r in replies] == [1]
    assert json.loads(replies[0].result.result_json) == {"touched": target}
    assert open(target).read() == "ran"
    # With the token, other RPCs get the usual answer of the call socket.
    with pytest.raises(grpc.RpcError) as ei:
        toucher.connect_calls().Ping(pb.PingRequest(), metadata=toucher.md(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_token_flag_still_works_for_manual_use(start_worker):
    w = start_worker("--token", "by-flag")
    stub = w.connect()
    with pytest.raises(grpc.RpcError) as ei:
        stub.Ping(pb.PingRequest(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stub.Ping(pb.PingRequest(), metadata=[("x-snakepit-token", "by-flag")], timeout=10)
    with pytest.raises(grpc.RpcError) as ei:
        w.connect_calls().Ping(pb.PingRequest(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_a_network_address_without_a_token_is_refused(start_worker, listen):
    w = start_worker(listen=listen, expect_ready=False)
    assert w.wait(timeout=20) == 1
    err = w.stderr()
    assert "SNAKEPIT_LISTEN_ERROR: refusing to listen on" in err
    assert listen in err and "SNAKEPIT_TOKEN" in err
    assert "--insecure-no-token-on-network" in err
    assert w.stdout_rest(timeout=1) == []


def test_a_network_address_with_a_token_starts(start_worker):
    w = start_worker(listen="0.0.0.0:0", token="net-secret")
    assert int(w.ready["listen"].rsplit(":", 1)[1]) > 0
    port = w.ready["listen"].rsplit(":", 1)[1]
    w.listen = f"127.0.0.1:{port}"
    w.connect().Ping(pb.PingRequest(), metadata=w.md(), timeout=10)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_opt_out_starts_and_warns_loudly(start_worker, how):
    if how == "flag":
        w = start_worker("--insecure-no-token-on-network", listen="0.0.0.0:0")
    else:
        w = start_worker(listen="0.0.0.0:0", env={"SNAKEPIT_INSECURE_NO_TOKEN": "1"})
    port = w.ready["listen"].rsplit(":", 1)[1]
    w.listen = f"127.0.0.1:{port}"
    w.connect().Ping(pb.PingRequest(), timeout=10)
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait(timeout=15) == 0
    assert "WITHOUT A TOKEN" in w.stderr()


@pytest.mark.parametrize("listen,loopback", [
    ("unix:/tmp/x.sock", True),
    ("127.0.0.1:0", True),
    ("127.8.9.10:5000", True),
    ("localhost:5000", True),
    ("[::1]:5000", True),
    ("0.0.0.0:0", False),
    ("[::]:0", False),
    ("10.1.2.3:5000", False),
    ("workers.example:5000", False),
])
def test_loopback_is_told_from_the_network(listen, loopback):
    assert is_loopback_listen(listen) is loopback
