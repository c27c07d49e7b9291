"""snakepit_bridge.session: the current call's session and its state."""

import asyncio
import json
import time

import pytest

from snakepit_bridge import session
from snakepit_bridge.base_adapter import BaseAdapter
from snakepit_bridge.generated import snakepit_bridge_pb2 as pb


def test_state_is_kept_per_session_and_only_in_a_session():
    assert session.get_session_id() is None
    with pytest.raises(RuntimeError, match="no session"):
        session.state()
    tok = session.enter("s1")
    try:
        assert session.get_session_id() == "s1"
        BaseAdapter().session_state()["n"] = 1
        assert session.state() == {"n": 1}
        assert session.state("s2") == {}
    finally:
        session.leave(tok)
    assert session.get_session_id() is None
    assert session.state("s1") == {"n": 1}
    session.forget("s1")
    session.forget("s2")
    assert session.state("s1") == {}
    session.forget("s1")


def test_a_task_keeps_the_session_it_started_with():
    async def main():
        tok = session.enter("outer")
        task = asyncio.ensure_future(asyncio.sleep(0, result=None))
        seen = asyncio.get_running_loop().create_task(_sid())
        session.leave(tok)
        await task
        return await seen

    async def _sid():
        return session.get_session_id()

    assert asyncio.run(main()) == "outer"


def test_state_is_bounded_least_recently_used_first(monkeypatch):
    monkeypatch.setattr(session, "MAX_SESSIONS", 3)
    for sid in ["a", "b", "c"]:
        session.state(sid)["id"] = sid
    session.state("a")  # a is now the most recently used
    session.state("d")
    assert session.count() == 3
    assert session.state("b") == {}, "b, the least recently used, was forgotten"
    for sid in ["a", "b", "c", "d"]:
        session.forget(sid)


def test_idle_state_is_forgotten(monkeypatch):
    session.state("old")["x"] = 1
    monkeypatch.setattr(session, "IDLE_LIMIT_S", 0.0)
    session.state("new")
    assert session.count() == 1
    session.forget("new")


def _req(rid, tool, sid):
    return pb.CallRequest(request_id=rid, tool_name=tool, args_json=b"{}", session_id=sid)


@pytest.mark.parametrize("rpc", ["CallBatchStream", "native", "CallStream"])
def test_a_real_worker_runs_each_call_in_its_session(worker, stream_clients, rpc):
    stub = worker.connect_calls() if rpc == "native" else worker.connect()
    method = stub.CallStream if rpc == "CallStream" else stub.CallBatchStream
    sc = stream_clients(method)
    # Inline (session_id) and thread-pool (session_calls) tools, sessions
    # interleaved, one call without a session.
    calls = [_req(1, "session_calls", "s1"), _req(2, "session_id", "s2"),
             _req(3, "session_calls", "s2"), _req(4, "session_id", ""),
             _req(5, "session_calls", "s1"), _req(6, "session_id", "s1")]
    replies = {}
    for c in calls:
        if rpc == "CallStream":
            sc.send(c)
        else:
            sc.send(pb.CallBatch(calls=[c]))
        # One at a time: the counts below depend on the order.
        deadline = time.monotonic() + 20
        while c.request_id not in replies:
            assert time.monotonic() < deadline
            got = sc.get(timeout=20)
            assert got is not None, sc.error
            for r in getattr(got, "replies", [got]):
                assert r.WhichOneof("body") == "result", r
                replies[r.request_id] = json.loads(r.result.result_json)
    assert replies[1]["session_id"] == "s1" and replies[1]["calls"] == 1
    assert replies[2] == "s2"
    assert replies[3]["session_id"] == "s2" and replies[3]["calls"] == 1
    assert replies[4] is None
    assert replies[5]["calls"] == 2
    assert replies[6] == "s1"
