"""HostileAdapter: a worker that sends the host everything it must refuse.

Used by the Rust host's tests to check that unknown event names, unknown
measurement keys, non-finite numbers, huge metadata values, endlessly
distinct metadata and endless stderr lines neither crash the host nor grow
its memory, that absurd drop counters are not believed, and that events a
dying worker held are reported lost; and that tools raising SystemExit,
KeyboardInterrupt or another BaseException, or returning what JSON cannot
carry, get a tool error while the worker lives on.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Dict

from .. import telemetry
from ..base_adapter import BaseAdapter, tool
from ..telemetry import _testing, _worker_api


class HostileExit(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


def _base_exception(kind: str) -> BaseException:
    if kind == "SystemExit":
        return SystemExit(3)
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt("interrupted by the tool")
    if kind == "HostileExit":
        return HostileExit("a custom BaseException")
    raise ValueError(f"unknown kind {kind!r}: SystemExit, KeyboardInterrupt or HostileExit")


def _bad_value(kind: str) -> Any:
    """A result JSON cannot carry, nested so that its path is not trivial."""
    bad = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
           "surrogate": "ok\ud800"}
    if kind == "surrogate_key":
        return {"outer": {"k\udc00": 1}}
    if kind not in bad:
        raise ValueError(f"unknown kind {kind!r}: {sorted(bad)} or surrogate_key")
    return {"outer": {"values": [1, 2.5, bad[kind]]}}


class HostileAdapter(BaseAdapter):
    @tool(description="Raises the BaseException named by kind (in the thread pool)")
    def raise_base(self, kind: str = "SystemExit") -> None:
        raise _base_exception(kind)

    @tool(description="Raises the BaseException named by kind (async tool)")
    async def araise_base(self, kind: str = "SystemExit") -> None:
        await asyncio.sleep(0)
        raise _base_exception(kind)

    @tool(description="Raises the BaseException named by kind (inline tool)", inline=True)
    def raise_base_inline(self, kind: str = "SystemExit") -> None:
        raise _base_exception(kind)

    @tool(description="Yields one chunk, then raises the BaseException named by kind "
                      "(async generator)", supports_streaming=True)
    async def astream_raise_base(self, kind: str = "SystemExit"):
        yield {"i": 0}
        raise _base_exception(kind)

    @tool(description="Returns a value JSON cannot carry: nan, inf, -inf, surrogate, "
                      "surrogate_key")
    def bad_result(self, kind: str = "nan") -> Any:
        return _bad_value(kind)

    @tool(description="bad_result as an inline tool", inline=True)
    def bad_result_inline(self, kind: str = "nan") -> Any:
        return _bad_value(kind)

    @tool(description="Returns ok (a call that succeeds)", inline=True)
    def ok(self) -> str:
        return "ok"

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
        for i in range(int(flips)):
            _testing.set_drop_count("sampled_out", (1 << 64) - 1 if i % 2 == 0 else 0)
            await _next_batch_sent()
        _testing.set_drop_count("sampled_out", int(final))
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
        while _worker_api.pending_written() < n // 2:
            await asyncio.sleep(0)
        # Block the event loop, so no further batch is drained, while gRPC's
        # own thread puts the written one on the socket; then die without
        # any cleanup, the rest of the burst still in the buffer.
        time.sleep(0.2)
        os._exit(int(code))


    @tool(description="Emits count events and exits at once (os._exit(code)), with no "
                      "telemetry batch in between")
    def emit_then_exit_at_once(self, count: int = 5000, code: int = 3) -> int:
        emit = telemetry.emit
        meta = {"tool": "doomed"}
        for i in range(int(count)):
            emit("tool.execution.stop", {"duration": i}, meta)
        os._exit(int(code))

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


async def _next_batch_sent() -> None:
    """Returns once a batch encoded after this call was written to the host."""
    for _ in range(2):
        # An event makes the stream send a batch now rather than within 1 s.
        telemetry.emit("tool.execution.stop", {"duration": 1}, {"tool": "flip"})
        seen = _worker_api.batches_written()
        while _worker_api.batches_written() == seen:
            await asyncio.sleep(0.001)
