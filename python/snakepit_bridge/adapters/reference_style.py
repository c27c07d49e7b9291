"""An adapter written as the reference system's adapters are: ``@tool``
with a positional description or none, events named from ``python.``
(``python.call.stop``) with the ``count`` measurement, and tools that
raise, collect garbage and keep a CPU busy. The end-to-end tests run it in
a real worker."""

from __future__ import annotations

import gc
import time

from snakepit_bridge import BaseAdapter, telemetry, tool


class _Cycle:
    def __init__(self) -> None:
        self.me = self


class ReferenceStyleAdapter(BaseAdapter):
    @tool("Upper-cases text, with the reference system's call events around it")
    def predict(self, text: str) -> dict:
        command = "predict"
        t0 = time.monotonic_ns()
        telemetry.emit("python.call.start", {"system_time": time.time_ns(), "count": 1},
                       {"command": command})
        result = {"label": text.upper()}
        telemetry.emit("python.call.stop", {"duration": time.monotonic_ns() - t0, "count": 1},
                       {"command": command})
        return result

    @tool("Returns its text, and its UTF-8 bytes as a binary result", inline=True)
    def echo(self, text: str) -> dict:
        return {"text": text, "raw": text.encode()}

    @tool
    def fail(self, message: str) -> None:
        """Raises ValueError(message)."""
        raise ValueError(message)

    @tool
    def spin(self, ms: float = 300) -> dict:
        """Keeps one CPU busy for ``ms`` milliseconds."""
        end = time.monotonic() + ms / 1000.0
        rounds = 0
        while time.monotonic() < end:
            rounds += 1
        return {"rounds": rounds}

    @tool
    def collect(self, cycles: int = 100) -> dict:
        """Makes ``cycles`` reference cycles and runs a full collection."""
        for _ in range(cycles):
            _Cycle()
        return {"collected": gc.collect()}
