"""The worker's own events besides a call's spans: ``gc.completed`` (a
``gc.callbacks`` hook), ``error.occurred`` (a tool raised) and
``tool.result_size`` (a result's encoded size; for an inline tool's call,
whose events ride on its reply, the host emits it from the reply).

Each is gated on the policy's cached per-name decision: an event the
policy drops whole (telemetry off, filtered out, rate 0) costs one dict
lookup and its drop counted, nothing is built for it. A GC can start in the
middle of any call, so ``gc.completed`` is emitted outside every call's
context: it carries no correlation id and no span.
"""

from __future__ import annotations

import contextvars
import gc
import time
from typing import Dict

from ..telemetry import _buffer, emit

GC_COMPLETED = "gc.completed"
ERROR_OCCURRED = "error.occurred"
RESULT_SIZE = "tool.result_size"
# The longest error_message of error.occurred, in characters (as the
# tool.execution.exception event's).
MAX_ERROR_MESSAGE = 1024

_monotonic_ns = time.monotonic_ns


def _dropped(name: str) -> bool:
    """True (the drop counted) when the policy's cached decision drops every
    event named ``name``. Not cached yet: False, and ``emit`` decides."""
    d = _buffer._decisions.get(name)
    if d is not None and d < 0:
        _buffer._DROP_NEXT[d]()
        return True
    return False


def result_size(tool: str, result_json: bytes, binaries: Dict[str, bytes]) -> None:
    """``tool.result_size``: ``message_size``, the bytes of a tool's encoded
    result (its JSON plus its binary results)."""
    if _dropped(RESULT_SIZE):
        return
    size = len(result_json)
    if binaries:
        size += sum(len(v) for v in binaries.values())
    emit(RESULT_SIZE, {"message_size": size}, {"tool": tool})


def error_occurred(tool: str, e: BaseException) -> None:
    """``error.occurred``: a tool raised ``e`` (with the call's correlation
    id and span, when it runs in one)."""
    if _dropped(ERROR_OCCURRED):
        return
    emit(ERROR_OCCURRED, {"count": 1}, {
        "tool": tool, "error_type": type(e).__name__,
        "error_message": str(e)[:MAX_ERROR_MESSAGE],
    })


_gc_t0 = 0


def _on_gc(phase: str, info: dict) -> None:
    global _gc_t0
    if phase == "start":
        _gc_t0 = _monotonic_ns()
        return
    if _dropped(GC_COMPLETED):
        return
    duration = _monotonic_ns() - _gc_t0 if _gc_t0 else 0
    _gc_t0 = 0
    measurements = {
        "count": 1, "generation": info.get("generation", 0),
        "collected": info.get("collected", 0),
        "uncollectable": info.get("uncollectable", 0), "duration": duration,
    }
    # A fresh context: no call's correlation id or span.
    contextvars.Context().run(emit, GC_COMPLETED, measurements)


def install_gc_events() -> None:
    """Emit ``gc.completed`` after every cyclic garbage collection of this
    process (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def remove_gc_events() -> None:
    """Stop emitting ``gc.completed``."""
    while _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)
