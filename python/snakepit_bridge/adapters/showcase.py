"""ShowcaseAdapter: the sample adapter used by tests, benchmarks and the demo."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any, Dict, Iterator

from .. import telemetry
from ..base_adapter import BaseAdapter, tool

log = logging.getLogger("snakepit_bridge.adapters.showcase")


class _LinearModel:
    """A fixed linear model y = w . x + b (stands in for a loaded ML model)."""

    def __init__(self) -> None:
        self.weights = [0.5, -1.25, 2.0]
        self.bias = 0.1

    def predict(self, x) -> float:
        xs = [float(v) for v in x]
        if len(xs) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} features, got {len(xs)}")
        return sum(w * v for w, v in zip(self.weights, xs, strict=True)) + self.bias


def spin(iterations: int) -> int:
    """A fixed pure-Python loop of ``iterations`` steps: CPU work that takes
    the same time in a worker as in any other Python process (the curves
    benchmark calibrates ``iterations`` to 1 ms). Returns a checksum."""
    acc = 0
    for i in range(int(iterations)):
        acc = (acc + i * i) & 0xFFFF
    return acc


class ShowcaseAdapter(BaseAdapter):
    def __init__(self) -> None:
        # One instance per worker: the "model" is loaded once and reused.
        self.model = _LinearModel()
        self.calls = 0
        # Memory that hold_memory keeps until the worker exits.
        self.held: list = []
        # What shm_keep keeps (a shared-memory argument outliving its call).
        self._kept: Any = b""

    @tool(description="Liveness check; returns {'ok': true}", inline=True)
    def ping(self) -> Dict[str, Any]:
        return {"ok": True}

    @tool(description="Returns its arguments unchanged", inline=True)
    def echo(self, **kwargs: Any) -> Dict[str, Any]:
        return kwargs

    @tool(description="CPU work in the thread pool: spin(iterations), a fixed pure-Python "
                      "loop of iterations steps")
    def cpu_spin(self, iterations: int = 10_000) -> int:
        return spin(iterations)

    @tool(description="Blocks the event loop for ms milliseconds (a misbehaving inline tool)",
          inline=True)
    def inline_sleep(self, ms: float = 10) -> Dict[str, Any]:
        time.sleep(float(ms) / 1000.0)
        return {"slept_ms": ms}

    @tool(description="Adds two numbers", inline=True)
    def add(self, a: float, b: float) -> float:
        return a + b

    @tool(description="Sleeps ms milliseconds (in the thread pool)")
    def sleep(self, ms: float = 10) -> Dict[str, Any]:
        time.sleep(float(ms) / 1000.0)
        return {"slept_ms": ms}

    @tool(description="Never returns: holds one thread of the pool forever "
                      "(a hung sync tool)")
    def block_forever(self) -> None:
        threading.Event().wait()

    @tool(description="Allocates mb megabytes (touched, so resident) and keeps them "
                      "until the worker exits; returns the total kept")
    def hold_memory(self, mb: int = 1) -> Dict[str, Any]:
        self.held.append(b"\x01" * (int(mb) * 1024 * 1024))
        return {"held_mb": sum(len(b) for b in self.held) // (1024 * 1024)}

    @tool(description="Sleeps ms milliseconds on the event loop (async tool)")
    async def async_sleep(self, ms: float = 10) -> Dict[str, Any]:
        await asyncio.sleep(float(ms) / 1000.0)
        return {"slept_ms": ms}

    @tool(description="Raises ValueError(message)")
    def fail(self, message: str = "boom") -> None:
        raise ValueError(message)

    @tool(description="Yields n chunks {'i': k}", supports_streaming=True)
    def stream(self, n: int = 3, delay_ms: float = 0) -> Iterator[Dict[str, int]]:
        for k in range(int(n)):
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            yield {"i": k}

    @tool(description="Yields one chunk, then never yields again: its thread blocks "
                      "forever (a generator that cannot be stopped)", supports_streaming=True)
    def stream_block_forever(self) -> Iterator[Dict[str, int]]:
        yield {"i": 0}
        threading.Event().wait()

    @tool(description="Async generator yielding n chunks {'i': k}", supports_streaming=True)
    async def astream(self, n: int = 3, delay_ms: float = 0):
        for k in range(int(n)):
            await asyncio.sleep(delay_ms / 1000.0)
            yield {"i": k}

    @tool(description="Yields fail_after chunks, then raises RuntimeError",
          supports_streaming=True)
    def stream_fail(self, fail_after: int = 2):
        for k in range(int(fail_after)):
            yield {"i": k}
        raise RuntimeError(f"stream failed after {fail_after} chunks")

    @tool(description="Emits count telemetry events as fast as possible (duration 1, "
                      "or i for event i with vary_duration); alternate_metadata "
                      "switches between two metadata dicts from one event to the next")
    def emit_events(self, count: int = 1000, name: str = "tool.execution.stop",
                    vary_duration: bool = False, alternate_metadata: bool = False) -> int:
        emit = telemetry.emit
        metas = ({"tool": "emit_events"}, {"tool": "emit_events_b"})
        meta = metas[0]
        meas = {"duration": 1}
        count = int(count)
        if not (vary_duration or alternate_metadata):
            for _ in range(count):
                emit(name, meas, meta)
            return count
        for i in range(count):
            emit(name, {"duration": i} if vary_duration else meas,
                 metas[i & 1] if alternate_metadata else meta)
        return count

    @tool(description="In the background: waits until no host holds the telemetry "
                      "stream, emits count events, then creates the file marker")
    def emit_when_detached(self, count: int, marker: str, timeout_s: float = 30.0) -> str:
        def run() -> None:
            deadline = time.monotonic() + float(timeout_s)
            while telemetry.stream_attached() and time.monotonic() < deadline:
                time.sleep(0.005)
            meas = {"duration": 1}
            meta = {"tool": "emit_when_detached"}
            for _ in range(int(count)):
                telemetry.emit("tool.execution.stop", meas, meta)
            with open(marker, "w") as f:
                f.write(f"{telemetry.buffered()} buffered\n")

        threading.Thread(target=run, name="emit-when-detached", daemon=True).start()
        return "started"

    @tool(description="Emits rate events/s for seconds, paced in 10 ms slices")
    def emit_paced(self, rate: int = 100_000, seconds: float = 2.0,
                   name: str = "tool.execution.stop") -> Dict[str, Any]:
        emit = telemetry.emit
        meas = {"duration": 1}
        meta = {"tool": "emit_paced"}
        per_slice = max(1, int(rate) // 100)
        slices = int(float(seconds) * 100)
        start = time.perf_counter()
        emitted = 0
        for k in range(slices):
            for _ in range(per_slice):
                emit(name, meas, meta)
            emitted += per_slice
            delay = start + (k + 1) * 0.01 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return {"emitted": emitted, "elapsed_s": time.perf_counter() - start}

    @tool(description="The guide's nested span example")
    def nested_spans(self, data: str = "abc") -> Dict[str, Any]:
        with telemetry.span("complex_operation"):
            with telemetry.span("preprocessing"):
                processed = data.strip().lower()
            with telemetry.span("inference"):
                result = self.model.predict([len(processed), 1, 0])
        return {"processed": processed, "result": result}

    @tool(description="Raises inside a user span named risky_step")
    def span_fail(self, message: str = "step failed") -> None:
        with telemetry.span("risky_step", {"stage": "demo"}):
            raise RuntimeError(message)

    @tool(description="The process id of the worker running the call", inline=True)
    def pid(self) -> int:
        return os.getpid()

    @tool(description="The current call's session id (None without one)", inline=True)
    def session_id(self) -> Any:
        return telemetry.get_session_id()

    @tool(description="Counts the calls of this tool in the current session (its state)")
    def session_calls(self) -> Dict[str, Any]:
        st = self.session_state()
        st["calls"] = st.get("calls", 0) + 1
        return {"session_id": telemetry.get_session_id(), "calls": st["calls"],
                "pid": os.getpid()}

    @tool(description="Correlation and trace context seen inside the tool", inline=True)
    def whoami(self) -> Dict[str, Any]:
        sp = telemetry.current_span() or {}
        return {
            "correlation_id": telemetry.get_correlation_id(),
            "traceparent": sp.get("incoming_traceparent"),
            "current_traceparent": telemetry.current_traceparent(),
            "trace_id": sp.get("trace_id"),
            "span_id": f"{sp['span_id']:016x}" if sp.get("span_id") else None,
            "parent_span_id": (
                f"{sp['parent_span_id']:016x}" if sp.get("parent_span_id") else None
            ),
            "outgoing_metadata": [list(p) for p in telemetry.outgoing_metadata()],
        }

    @tool(description="Logs message at level via the logging module; detached: from a "
                      "new thread, outside the call's context (no span, no correlation id); "
                      "hold_ms: then sleeps")
    def log(self, level: str = "info", message: str = "hello",
            detached: bool = False, hold_ms: float = 0) -> Dict[str, Any]:
        lvl = logging.getLevelName(level.upper())
        if not isinstance(lvl, int):
            raise ValueError(f"unknown level {level!r}")
        if detached:
            # A new thread starts with an empty context.
            th = threading.Thread(target=log.log, args=(lvl, message))
            th.start()
            th.join()
        else:
            log.log(lvl, message)
        if hold_ms:
            # The call stays open while the record travels to the host.
            time.sleep(float(hold_ms) / 1000.0)
        return {"logged": True, "level": level}

    @tool(description="Character, word and line counts of a text")
    def text_stats(self, text: str = "") -> Dict[str, Any]:
        words = text.split()
        return {
            "chars": len(text),
            "words": len(words),
            "lines": len(text.splitlines()) if text else 0,
            "unique_words": len({w.lower() for w in words}),
            "longest_word": max(words, key=len) if words else "",
        }

    @tool(description="Fixed linear model: y = 0.5*x0 - 1.25*x1 + 2*x2 + 0.1")
    def predict(self, x) -> Dict[str, Any]:
        with telemetry.span("inference", {"model": "linear-3"}):
            y = self.model.predict(x)
        return {"y": y, "model": "linear-3"}

    @tool(description="Returns a result of n_bytes: a JSON string, or binary bytes")
    def big_result(self, n_bytes: int = 1024, binary: bool = False) -> Any:
        n = int(n_bytes)
        if binary:
            return {"data": b"x" * n}
        return "x" * max(0, n - 2)

    @tool(description="Returns the size of a binary parameter and echoes it back as binary")
    def bytes_echo(self, data: bytes = b"") -> Dict[str, Any]:
        return {"size": len(data), "data": bytes(data)}

    @tool(description="Echoes binary data as it came: its Python type (memoryview when "
                      "it came in shared memory), whether it is read-only, and the data")
    def shm_echo(self, data: bytes = b"") -> Dict[str, Any]:
        view = memoryview(data)
        return {"kind": type(data).__name__, "readonly": view.readonly, "data": data}

    @tool(description="Keeps binary data past the call (shm_kept returns it)")
    def shm_keep(self, data: bytes = b"") -> Dict[str, Any]:
        self._kept = data
        return {"kind": type(data).__name__}

    @tool(description="Returns the data shm_keep kept")
    def shm_kept(self) -> Dict[str, Any]:
        return {"data": self._kept}

    @tool(description="Sleeps ms milliseconds holding data, then returns n_bytes binary bytes")
    def shm_sleep(self, ms: float = 10, data: bytes = b"", n_bytes: int = 0) -> Dict[str, Any]:
        time.sleep(ms / 1000.0)
        return {"size": len(data), "data": b"r" * int(n_bytes)}
