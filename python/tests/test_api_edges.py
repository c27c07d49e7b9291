"""The reference system's forms of the Python API: span as a decorator and
with a correlation id, get_correlation_id(default), @tool without keywords,
outgoing_metadata(initial), reset_correlation_id(token)."""

from __future__ import annotations

import asyncio

import pytest

from snakepit_bridge import BaseAdapter, telemetry, tool
from snakepit_bridge.telemetry import _worker_api as tw


def drained():
    return [tw.event_to_dict(e) for e in tw.drain(10**6)]


def names(evs):
    return [e["name"] for e in evs]


# ---- span as a decorator ----------------------------------------------------


def test_span_decorates_a_function_one_span_per_call():
    @telemetry.span("load", {"model": "m1"})
    def load(x, scale=1):
        """Loads."""
        telemetry.emit("custom.inside", {"n": x})
        return x * scale

    assert load.__name__ == "load" and load.__doc__ == "Loads."
    assert load(2, scale=3) == 6
    assert load(1) == 1
    evs = drained()
    assert names(evs) == ["load.start", "custom.inside", "load.stop"] * 2
    first, inside, stop = evs[:3]
    assert first["metadata"] == {"model": "m1"}
    assert inside["span_id"] == first["span_id"] == stop["span_id"] != 0
    assert stop["measurements"]["duration"] >= 0
    assert evs[3]["span_id"] != first["span_id"], "each call is its own span"
    assert telemetry.current_span() is None


def test_span_decorator_records_an_exception_and_reraises():
    @telemetry.span("risky")
    def risky():
        raise ValueError("bad input 7")

    with pytest.raises(ValueError, match="bad input 7"):
        risky()
    evs = drained()
    assert names(evs) == ["risky.start", "risky.exception"]
    assert evs[1]["metadata"]["error_type"] == "ValueError"
    assert evs[1]["metadata"]["error_message"] == "bad input 7"


def test_span_decorates_a_coroutine_function():
    @telemetry.span("fetch")
    async def fetch(n):
        await asyncio.sleep(0)
        telemetry.emit("custom.inside", {"n": n})
        return n + 1

    assert asyncio.iscoroutinefunction(fetch)

    async def main():
        return await asyncio.gather(fetch(1), fetch(2))

    assert asyncio.run(main()) == [2, 3]
    evs = drained()
    starts = [e for e in evs if e["name"] == "fetch.start"]
    stops = [e for e in evs if e["name"] == "fetch.stop"]
    inside = [e for e in evs if e["name"] == "custom.inside"]
    assert len(starts) == len(stops) == len(inside) == 2
    by_n = {e["measurements"]["n"]: e["span_id"] for e in inside}
    assert sorted(by_n.values()) == sorted(e["span_id"] for e in starts)
    assert by_n[1] != by_n[2], "concurrent calls keep their own spans"


def test_span_decorates_a_generator_current_only_while_it_runs():
    seen_outside = []

    @telemetry.span("rows", {"table": "t"})
    def rows(n):
        for i in range(n):
            telemetry.emit("custom.inside", {"n": i})
            yield i

    for i in rows(3):
        seen_outside.append(telemetry.current_span())
        assert i >= 0
    assert seen_outside == [None, None, None]
    evs = drained()
    assert names(evs) == ["rows.start"] + ["custom.inside"] * 3 + ["rows.stop"]
    assert {e["span_id"] for e in evs} == {evs[0]["span_id"]}


def test_a_generator_closed_early_stops_its_span_and_closes_the_generator():
    closed = []

    @telemetry.span("rows")
    def rows():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    g = rows()
    assert next(g) == 1
    g.close()
    assert closed == [True]
    assert names(drained()) == ["rows.start", "rows.stop"]


def test_a_failing_generator_emits_the_exception():
    @telemetry.span("rows")
    def rows():
        yield 1
        raise KeyError("gone")

    with pytest.raises(KeyError):
        list(rows())
    evs = drained()
    assert names(evs) == ["rows.start", "rows.exception"]
    assert evs[1]["metadata"]["error_type"] == "KeyError"


def test_span_decorates_an_async_generator():
    @telemetry.span("chunks")
    async def chunks(n):
        for i in range(n):
            await asyncio.sleep(0)
            telemetry.emit("custom.inside", {"n": i})
            yield i

    async def main():
        out = []
        async for i in chunks(2):
            out.append((i, telemetry.current_span()))
        return out

    assert asyncio.run(main()) == [(0, None), (1, None)]
    evs = drained()
    assert names(evs) == ["chunks.start", "custom.inside", "custom.inside", "chunks.stop"]
    assert len({e["span_id"] for e in evs}) == 1


def test_span_decorator_refuses_a_non_function():
    with pytest.raises(TypeError, match=r"telemetry.span\('x'\) decorates a function; got int"):
        telemetry.span("x")(42)


def test_decorated_span_still_works_as_a_context_manager():
    s = telemetry.span("block")
    with s as entered:
        assert entered is s
        assert telemetry.current_span()["span_id"] == s.span_id
    assert names(drained()) == ["block.start", "block.stop"]


# ---- span(name, metadata, correlation_id) -----------------------------------


def test_span_third_argument_is_the_correlation_id_of_its_events():
    token = telemetry.set_correlation_id("ambient")
    try:
        with telemetry.span("inference", {"model": "gpt-4"}, "abc-123"):
            telemetry.emit("custom.inside", {"n": 1})
        with pytest.raises(RuntimeError):
            with telemetry.span("inference", None, "abc-456"):
                raise RuntimeError("x")
    finally:
        telemetry.reset_correlation_id(token)
    evs = drained()
    assert [(e["name"], e["correlation_id"]) for e in evs] == [
        ("inference.start", "abc-123"),
        ("custom.inside", "ambient"),
        ("inference.stop", "abc-123"),
        ("inference.start", "abc-456"),
        ("inference.exception", "abc-456"),
    ]


def test_span_decorator_with_a_correlation_id():
    @telemetry.span("job", {}, "cid-job")
    def job():
        return 1

    job()
    assert {e["correlation_id"] for e in drained()} == {"cid-job"}


# ---- correlation ids --------------------------------------------------------


def test_get_correlation_id_default():
    assert telemetry.get_correlation_id() is None
    assert telemetry.get_correlation_id("-") == "-"
    token = telemetry.set_correlation_id("cid-5")
    assert telemetry.get_correlation_id("-") == "cid-5"
    telemetry.reset_correlation_id(token)
    assert telemetry.get_correlation_id("-") == "-"


def test_reset_correlation_id_with_a_token_restores_the_previous_id():
    outer = telemetry.set_correlation_id("outer")
    inner = telemetry.set_correlation_id("inner")
    telemetry.reset_correlation_id(inner)
    assert telemetry.get_correlation_id() == "outer"
    telemetry.reset_correlation_id(outer)
    assert telemetry.get_correlation_id() is None
    telemetry.set_correlation_id("again")
    telemetry.reset_correlation_id()
    assert telemetry.get_correlation_id() is None


def test_outgoing_metadata_extends_initial_pairs():
    initial = [("authorization", "Bearer t"), ("x-snakepit-correlation-id", "stale")]
    assert telemetry.outgoing_metadata(initial) == initial, "nothing current: kept as given"
    token = telemetry.set_correlation_id("cid-7")
    try:
        md = telemetry.outgoing_metadata(initial)
        assert md == [("authorization", "Bearer t"), ("x-snakepit-correlation-id", "cid-7")]
        assert initial[1] == ("x-snakepit-correlation-id", "stale"), "initial unchanged"
        with telemetry.span("outgoing"):
            sp = telemetry.current_span()
            md = telemetry.outgoing_metadata({"authorization": "Bearer t"})
    finally:
        telemetry.reset_correlation_id(token)
    assert md == [
        ("authorization", "Bearer t"),
        ("x-snakepit-correlation-id", "cid-7"),
        ("traceparent", f"00-{sp['trace_id']}-{sp['span_id']:016x}-01"),
    ]
    assert telemetry.outgoing_metadata(()) == []


# ---- @tool ------------------------------------------------------------------


class ToolForms(BaseAdapter):
    @tool("Positional description")
    def positional(self, x: int) -> int:
        return x + 1

    @tool
    def bare(self, x: int) -> int:
        """Bare tool: first docstring line."""
        return x * 2

    @tool()
    def empty_parens(self):
        return "ok"

    @tool(description="Keyword", name="renamed")
    def keyword(self):
        return "kw"

    @tool("Streams")
    def stream(self, n: int):
        yield from range(n)

    @tool
    @telemetry.span("traced")
    async def traced(self, x: int) -> int:
        return x


def test_tool_forms():
    a = ToolForms()
    tools = a.tools()
    assert set(tools) == {"positional", "bare", "empty_parens", "renamed", "stream", "traced"}
    assert tools["positional"].spec.description == "Positional description"
    assert tools["bare"].spec.description == "Bare tool: first docstring line."
    assert tools["renamed"].spec.description == "Keyword"
    assert tools["stream"].spec.supports_streaming is True
    assert tools["positional"].spec.supports_streaming is False
    assert tools["traced"].is_async is True
    assert tools["positional"].fn(1) == 2 and tools["bare"].fn(3) == 6
    assert asyncio.run(tools["traced"].fn(5)) == 5
    assert names(drained()) == ["traced.start", "traced.stop"]


def test_tool_refuses_a_description_given_twice_and_a_non_function():
    with pytest.raises(TypeError, match="description twice"):
        tool("a", description="b")
    with pytest.raises(TypeError, match="function or a description string; got int"):
        tool(3)
