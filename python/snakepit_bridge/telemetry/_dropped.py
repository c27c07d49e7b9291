"""Spans that record nothing: those whose start, stop and exception
events the policy all drops (telemetry disabled, or the names filtered out
or sampled at rate 0). ``_buffer.span`` returns them; they only count the
events they drop.

With the native module, a span whose three events drop for one reason
enters and exits in C (``DroppedSpanBase``, ticking a ``SpanTally``);
without it, in Python (``_DroppedWhole``, ticking a ``_CountTally``).
"""

from __future__ import annotations

import itertools
from typing import Callable

from ._decorate import decorate

_new = object.__new__


class _CountTally:
    """A count of spans dropped whole for one reason, each standing for two
    dropped events: ``tick()`` counts one, ``value`` reads the count. The
    native module's ``SpanTally`` is the same, ticked from C."""

    __slots__ = ("tick", "_count")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.tick = self._count.__next__

    @property
    def value(self) -> int:
        """Spans counted so far."""
        from ._buffer import count_value  # the module that imports this one

        return count_value(self._count)


try:
    from .._native import DroppedSpanBase as _NativeDroppedBase
    from .._native import SpanTally as Tally
except ImportError:  # installed without the native module, or an older one
    _NativeDroppedBase = None
    Tally = _CountTally


class _NoRecord:
    """What every span that records nothing shares: it decorates as a span
    does, has no ids, and is never made current (its ``_ctx`` is None)."""

    __slots__ = ()
    _ctx = None

    def __call__(self, fn: Callable) -> Callable:
        """Decorate ``fn``: each call runs in a new span of this name."""
        from ._buffer import span  # the module that imports this one

        return decorate(fn, span, self.name, self.metadata, self.correlation_id)

    @property
    def span_id(self) -> int:
        """0: the span records nothing."""
        return 0

    @property
    def trace_id(self) -> str:
        """Empty: the span records nothing."""
        return ""


class _Dropped(_NoRecord):
    """A span whose start, stop and exception events the policy all drops
    (telemetry disabled, or the names filtered or sampled at rate 0).

    Entering and leaving it only count the dropped events, by reason, as
    the emit path would; it is not made current (what runs inside sees the
    enclosing span), and it has no ids. One shared instance per name serves
    ``span(name)`` without metadata or correlation id. ``_drops``: the
    start, stop and exception events' drop counters (``__next__``).
    """

    __slots__ = ("name", "metadata", "correlation_id", "_drops")

    def __enter__(self) -> _Dropped:
        self._drops[0]()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._drops[1 if exc_type is None else 2]()
        return False

    def _again(self) -> _Dropped:
        """Another span counted as this one (for its own metadata)."""
        s = _new(type(self))
        s._drops = self._drops
        return s


class _DroppedWhole(_Dropped):
    """A ``_Dropped`` whose three events drop for one reason (the usual
    case): entering it ticks that reason's pair tally (``_drops`` is its
    ``tick``); leaving it does nothing. Used without the native module."""

    __slots__ = ()

    def __enter__(self) -> _DroppedWhole:
        self._drops()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return False


if _NativeDroppedBase is not None:

    class _DroppedWholeNative(_NativeDroppedBase, _NoRecord):
        """``_DroppedWhole`` with ``__enter__`` and ``__exit__`` in C: a
        ``with`` of it runs no Python frame."""

        __slots__ = ("name", "metadata", "correlation_id")

        def _again(self) -> _DroppedWholeNative:
            """Another span counted as this one (for its own metadata)."""
            return type(self)(self.tally)

    def dropped_whole(tally) -> _NoRecord:
        """A span dropped whole, counted in ``tally`` (a ``Tally``)."""
        return _DroppedWholeNative(tally)

else:

    def dropped_whole(tally) -> _NoRecord:
        """A span dropped whole, counted in ``tally`` (a ``Tally``)."""
        s = _new(_DroppedWhole)
        s._drops = tally.tick
        return s


def new_dropped(drops: tuple) -> _Dropped:
    """A dropped span counting its start, stop and exception with the
    ``drops`` counters' ``__next__`` (reasons that differ)."""
    s = _new(_Dropped)
    s._drops = drops
    return s
