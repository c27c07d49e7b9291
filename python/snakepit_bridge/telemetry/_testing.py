"""Test support: puts the telemetry state back to a fresh worker's, and sets
drop counters. Imported by tests, benchmarks and the test adapters only;
nothing in the worker uses it."""

from __future__ import annotations

import itertools
from typing import Optional

from . import _buffer
from ._policy import DISABLED, DROP_REASONS, FILTERED, SAMPLED_ALL, Policy


def _install_counters(values: list) -> None:
    """Fresh drop counters reading ``values`` (in DROP_REASONS order)."""
    b = _buffer
    counters = [itertools.count(v) for v in values]
    pairs = [b._Tally() for _ in values]
    b._counters = counters
    b._pair_tallies = pairs
    b._next_full = counters[0].__next__
    b._next_sampled = counters[1].__next__
    b._DROP_NEXT = {
        DISABLED: counters[3].__next__,
        FILTERED: counters[2].__next__,
        SAMPLED_ALL: counters[1].__next__,
    }
    b._PAIR = {DISABLED: pairs[3], FILTERED: pairs[2], SAMPLED_ALL: pairs[1]}
    # Dropped spans hold the old counters' methods: decide them afresh.
    b._span_modes = {}


def reset(capacity: Optional[int] = None) -> None:
    """Empty the buffer, zero the drop counters, install the default policy and
    set the buffer capacity (``capacity``, else $SNAKEPIT_TELEMETRY_BUFFER or
    the default). Not thread-safe against emitters."""
    b = _buffer
    b._buf.clear()
    b._cid_hash.clear()
    _install_counters([0] * len(DROP_REASONS))
    b.set_policy(Policy())
    b.set_buffer_capacity(capacity if capacity else b.env_int(
        "SNAKEPIT_TELEMETRY_BUFFER", b.DEFAULT_BUFFER))


def set_drop_count(reason: str, value: int) -> None:
    """Make the cumulative drop counter ``reason`` (a DROP_REASONS name) read
    ``value`` from now on (e.g. 2**64-1, to test the host's wrap handling)."""
    i = DROP_REASONS.index(reason)
    values = list(_buffer.drop_counts())
    values[i] = int(value)
    _install_counters(values)
