"""HostileAdapter: a worker that sends the host everything it must refuse.

Used by the Rust host's tests to check that unknown event names, unknown
measurement keys, non-finite numbers, huge metadata values, endlessly
distinct metadata and endless stderr lines neither crash the host nor grow
its memory.
"""

from __future__ import annotations

import os
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

    @tool(description="Writes size bytes to stderr (fd 2) without a newline, then "
                      "a newline and the line `after`")
    def flood_stderr(self, size: int = 200 << 20, after: str = "flood over") -> int:
        chunk = b"x" * (1 << 20)
        left = int(size)
        while left > 0:
            n = os.write(2, chunk[:left])
            left -= n
        os.write(2, b"\n" + after.encode() + b"\n")
        return int(size)
