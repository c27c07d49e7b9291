"""The observability guide's Python snippets, verbatim, and what they emit."""

from __future__ import annotations

from snakepit_bridge import BaseAdapter, telemetry, tool
from snakepit_bridge.base_adapter import BaseAdapter as BaseAdapter2
from snakepit_bridge.base_adapter import tool as tool2
from snakepit_bridge.telemetry import _worker_api as tw


def drained():
    return [tw.event_to_dict(e) for e in tw.drain(10**6)]


def test_imports_both_ways():
    assert BaseAdapter is BaseAdapter2 and tool is tool2


def test_emit_snippet_verbatim():
    # --- guide snippet: telemetry.emit() ---
    from snakepit_bridge import telemetry

    telemetry.emit(
        "tool.execution.stop",
        {"duration": 1234, "bytes": 5000},
        {"tool": "predict", "status": "success"},
        correlation_id="abc-123"
    )
    # --- end snippet ---
    (ev,) = drained()
    assert ev["name"] == "tool.execution.stop"
    assert ev["measurements"] == {"duration": 1234, "bytes": 5000}
    assert ev["metadata"] == {"tool": "predict", "status": "success"}
    assert ev["correlation_id"] == "abc-123"
    assert ev["timestamp_ns"] > 1_600_000_000 * 10**9


class _Model:
    def predict(self, x):
        return {"prediction": str(x).upper()}


class GuideAdapter(BaseAdapter):
    def __init__(self):
        self.model = _Model()

    def preprocess(self, data):
        return data.strip()

    # --- guide snippet: telemetry.span() ---
    @tool(description="Perform inference")
    def inference(self, input_data: str) -> dict:
        with telemetry.span("inference", {"model": "gpt-4"}):
            result = self.model.predict(input_data)
        return result
    # --- end snippet ---

    # --- guide snippet: nested spans (as a tool) ---
    @tool(description="Nested spans")
    def complex_operation(self, data):
        with telemetry.span("complex_operation"):
            with telemetry.span("preprocessing"):
                processed = self.preprocess(data)
            with telemetry.span("inference"):
                result = self.model.predict(processed)
        return result
    # --- end snippet ---


def test_span_snippet_verbatim():
    a = GuideAdapter()
    assert a.inference("hi") == {"prediction": "HI"}
    evs = drained()
    assert [e["name"] for e in evs] == ["inference.start", "inference.stop"]
    start, stop = evs
    assert start["metadata"] == {"model": "gpt-4"}
    assert start["measurements"]["system_time"] > 0
    assert stop["measurements"]["duration"] >= 0
    assert start["span_id"] == stop["span_id"] != 0
    assert start["span_name"] == "inference"
    assert len(start["trace_id"]) == 32


def test_nested_spans_snippet_in_tool():
    a = GuideAdapter()
    tools = a.tools()
    assert set(tools) == {"inference", "complex_operation"}
    assert tools["inference"].spec.description == "Perform inference"
    assert a.complex_operation("  x ") == {"prediction": "X"}
    evs = drained()
    names = [e["name"] for e in evs]
    assert names == [
        "complex_operation.start", "preprocessing.start", "preprocessing.stop",
        "inference.start", "inference.stop", "complex_operation.stop",
    ]
    outer = evs[0]
    for child in (evs[1], evs[3]):
        assert child["parent_span_id"] == outer["span_id"]
        assert child["trace_id"] == outer["trace_id"]
    assert evs[1]["span_id"] != evs[3]["span_id"]


def test_span_exception_event():
    try:
        with telemetry.span("risky", {"k": "v"}):
            raise KeyError("nope")
    except KeyError:
        pass
    evs = drained()
    assert [e["name"] for e in evs] == ["risky.start", "risky.exception"]
    exc = evs[1]
    assert exc["metadata"]["error_type"] == "KeyError"
    assert "nope" in exc["metadata"]["error_message"]
    assert exc["metadata"]["k"] == "v"
    assert exc["measurements"]["duration"] >= 0


def test_correlation_snippet_verbatim():
    # --- guide snippet: Correlation IDs ---
    correlation_id = telemetry.new_correlation_id()
    telemetry.set_correlation_id(correlation_id)
    current_id = telemetry.get_correlation_id()
    telemetry.reset_correlation_id()
    # --- end snippet ---
    assert current_id == correlation_id
    assert telemetry.get_correlation_id() is None


def test_correlation_carried_by_emit_and_span():
    token = telemetry.set_correlation_id("cid-1")
    telemetry.emit("custom.event", {"n": 1})
    with telemetry.span("work"):
        pass
    telemetry.reset_correlation_id(token)
    telemetry.emit("custom.event", {"n": 2})
    evs = drained()
    assert [e["correlation_id"] for e in evs] == ["cid-1", "cid-1", "cid-1", ""]


def test_correlation_helpers():
    import logging

    assert telemetry.CORRELATION_HEADER == "x-snakepit-correlation-id"
    assert telemetry.outgoing_metadata() == []
    tok = telemetry.set_correlation_id("cid-9")
    with telemetry.span("outgoing"):
        md = dict(telemetry.outgoing_metadata())
        sp = telemetry.current_span()
    assert md["x-snakepit-correlation-id"] == "cid-9"
    assert md["traceparent"] == f"00-{sp['trace_id']}-{sp['span_id']:016x}-01"
    f = telemetry.correlation_filter()
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert f.filter(rec) and rec.correlation_id == "cid-9"
    telemetry.reset_correlation_id(tok)
    rec2 = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    f.filter(rec2)
    assert rec2.correlation_id == "-"


def test_correlation_is_context_local():
    import asyncio

    async def task(cid):
        telemetry.set_correlation_id(cid)
        await asyncio.sleep(0.01)
        return telemetry.get_correlation_id()

    async def main():
        return await asyncio.gather(task("a"), task("b"))

    assert asyncio.run(main()) == ["a", "b"]
    assert telemetry.get_correlation_id() is None
