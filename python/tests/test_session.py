"""snakepit_bridge.session: the current call's session and its state."""

import asyncio

import pytest

from snakepit_bridge import session
from snakepit_bridge.base_adapter import BaseAdapter


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
