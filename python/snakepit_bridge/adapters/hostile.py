"""HostileAdapter: a worker that sends the host everything it must refuse.

Used by the Rust host's tests to check that unknown event names, unknown
measurement keys, non-finite numbers, huge metadata values and endlessly
distinct metadata neither crash the host nor grow its memory, that absurd
drop counters are not believed, and that events a dying worker held are
reported lost.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any, Dict

from .. import telemetry
from ..base_adapter import BaseAdapter, tool


class HostileAdapter(BaseAdapter):
    @tool(description="Emits count events with distinct names not in any catalog")
    def unknown_names(self, count: int = 100, prefix: str = "hostile.unknown") -> int:
        emit = telemetry.emit
        for i in range(int(count)):
            emit(f"{prefix}{i}", {"duration": 1}, {"i": str(i)})
        return int(count)

    @tool(description="Emits count events with invalid names (spaces, empty segments)")
    def invalid_names(self, count: int = 10) -> int:
        for i in range(int(count)):
            telemetry.emit(f"bad name {i}!", {"duration": 1})
            telemetry.emit("tool..stop", {"duration": 1})
        return 2 * int(count)

    @tool(description="Emits count known events whose metadata value has size bytes")
    def huge_metadata(self, count: int = 10, size: int = 1 << 20) -> int:
        value = "x" * int(size)
        for i in range(int(count)):
            telemetry.emit("tool.execution.stop", {"duration": i},
                           {"tool": value + str(i), "k" * 500: "v"})
        return int(count)

    @tool(description="Emits known events with NaN / infinite / non-numeric measurements")
    def non_finite(self, count: int = 10) -> int:
        for _ in range(int(count)):
            telemetry.emit("tool.execution.stop", {"duration": float("nan")}, {"tool": "nan"})
            telemetry.emit("tool.execution.stop", {"duration": float("inf"), "bytes": 7},
                           {"tool": "inf"})
            telemetry.emit("tool.execution.stop", {"duration": "soon"}, {"tool": "str"})
        return 3 * int(count)

    @tool(description="Emits known events with unknown measurement keys")
    def unknown_measurements(self, count: int = 10) -> int:
        for i in range(int(count)):
            telemetry.emit("tool.execution.stop", {"duration": 5, f"surprise{i}": 1},
                           {"tool": "extra"})
        return int(count)

    @tool(description="Emits count known events, each with distinct metadata keys and values")
    def distinct_metadata(self, count: int = 100_000, fields: int = 2) -> int:
        emit = telemetry.emit
        n = int(fields)
        for i in range(int(count)):
            md: Dict[str, Any] = {"tool": f"t{i}"}
            for j in range(n):
                md[f"key{i}_{j}"] = f"value{i}_{j}"
            emit("tool.execution.stop", {"duration": i}, md)
        return int(count)

    @tool(description="Emits one known event with `fields` metadata entries")
    def many_fields(self, fields: int = 100) -> int:
        telemetry.emit("tool.execution.stop", {"duration": 1},
                       {f"f{j}": "v" for j in range(int(fields))})
        return 1

    @tool(description="Opens a user span whose name is not in the catalog", inline=True)
    def custom_span(self, name: str = "my_inference") -> str:
        with telemetry.span(name, {"model": "m"}):
            pass
        return name

    @tool(description="Reports the sampled_out drop counter as 2**64-1 and 0 in turn "
                      "(flips batches), then as final; the counter stays at final")
    async def flip_drop_counters(self, flips: int = 20, final: int = 5) -> int:
        counters = telemetry._counters
        for i in range(int(flips)):
            counters[1] = itertools.count((1 << 64) - 1 if i % 2 == 0 else 0)
            await _next_batch_sent()
        counters[1] = itertools.count(int(final))
        await _next_batch_sent()
        return int(flips)

    @tool(description="Emits count events, waits until a batch has told the host most "
                      "of them are still unsent, then exits at once (os._exit(code))")
    async def emit_then_exit(self, count: int = 5000, code: int = 3) -> int:
        emit = telemetry.emit
        n = int(count)
        meta = {"tool": "doomed"}
        for i in range(n):
            emit("tool.execution.stop", {"duration": i}, meta)
        while telemetry.pending_written() < n // 2:
            await asyncio.sleep(0)
        # Block the event loop, so no further batch is drained, while gRPC's
        # own thread puts the written one on the socket; then die without
        # any cleanup, the rest of the burst still in the buffer.
        time.sleep(0.2)
        os._exit(int(code))


async def _next_batch_sent() -> None:
    """Returns once a batch encoded after this call was written to the host."""
    for _ in range(2):
        # An event makes the stream send a batch now rather than within 1 s.
        telemetry.emit("tool.execution.stop", {"duration": 1}, {"tool": "flip"})
        seen = telemetry.batches_written()
        while telemetry.batches_written() == seen:
            await asyncio.sleep(0.001)
