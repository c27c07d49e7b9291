"""The emit path: per-name decisions, the bounded event buffer, drop
counters, ``emit`` and ``span``.

``emit`` does almost nothing on the calling thread. It looks up a per-name
decision precomputed from the policy (enabled / filter / sampling
threshold), computes the sampling key only when a rate below 1 applies, and
appends one tuple to a bounded ``collections.deque``. No locks, no protobuf.
The hot state lives in this module's globals (the fastest lookups from
``emit``); ``set_policy`` and ``set_buffer_capacity`` rebind them.

A buffered event is ``(unix ns, name, measurements, metadata, correlation id,
span context, is span event)``.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
import traceback as _traceback
import zlib
from collections import deque
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ._context import cid_var, span_var
from ._decorate import decorate
from ._dropped import Tally as _Tally
from ._dropped import dropped_whole as _dropped_whole
from ._dropped import new_dropped as _new_dropped
from ._policy import (
    DISABLED,
    DROP_REASONS,
    FILTERED,
    MASK,
    MIX,
    SAMPLED_ALL,
    Policy,
    PolicyError,
    policy_from_control,
)

_log = logging.getLogger("snakepit_bridge.telemetry")

DEFAULT_BUFFER = 10_000


def env_int(name: str, default: int) -> int:
    """A positive int from the environment variable ``name``, else ``default``."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def count_value(c: itertools.count) -> int:
    """The next value of an ``itertools.count`` without advancing it."""
    # itertools.count repr is "count(N)"; next() on it is atomic under the GIL,
    # which makes these exact counters without a lock on the hot path.
    return int(repr(c)[6:-1])


_cid_get = cid_var.get
_span_get = span_var.get
_span_set = span_var.set

_policy = Policy()
_decisions: Dict[str, int] = {}
_cid_hash: Dict[str, int] = {}
_buf: deque = deque()
_append = _buf.append
_cap = env_int("SNAKEPIT_TELEMETRY_BUFFER", DEFAULT_BUFFER)
_counters = [itertools.count() for _ in DROP_REASONS]
_next_full = _counters[0].__next__
_next_sampled = _counters[1].__next__
_DROP_NEXT = {
    DISABLED: _counters[3].__next__,
    FILTERED: _counters[2].__next__,
    SAMPLED_ALL: _counters[1].__next__,
}

# Pair tallies, by reason: a span the policy drops whole counts its start
# and its stop (or exception) at once, when entered: one tick, two events.
_pair_tallies = [_Tally() for _ in DROP_REASONS]
_PAIR = {DISABLED: _pair_tallies[3], FILTERED: _pair_tallies[2],
         SAMPLED_ALL: _pair_tallies[1]}
_policy_lock = threading.Lock()
_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_getrandbits = random.getrandbits
_policy_listeners: list = []
# Root spans (outside any call) get trace id = per-process random 64-bit prefix +
# the span's own random id: unique, and much cheaper than 128 fresh random bits.
_TRACE_PREFIX = f"{random.SystemRandom().getrandbits(64) or 1:016x}"


# While a counters file is open (``_stream.open_counters``), every
# PUBLISH_EVERY accepted events the emit path calls ``_publish``: the
# worker's shared accepted-events counter is rewritten, so a host can count
# what the worker accepted even if it dies before the next batch.
PUBLISH_EVERY = 64
# Events that left the buffer (drained, less those put back): with the
# buffer's length, every event the worker accepted (``_stream`` moves it).
_drained = 0
# The accepted count at which the counters file is due a rewrite; None
# while no counters file is open.
_publish_at: Optional[int] = None
# The emit paths append while the buffer is shorter than ``_gate``: the
# capacity, or the length at which ``_publish_at`` is reached if lower
# (``regate``). At the gate, ``_at_gate`` counts a full buffer, or appends
# and publishes: one comparison per event on the fast path either way.
_gate = _cap


def _no_publish() -> None:
    pass


_publish = _no_publish


def regate() -> None:
    """Recomputes ``_gate`` after the capacity, the buffer's drained count
    or the publish point changed."""
    global _gate
    at = _publish_at
    # The event that brings the accepted count to `at` takes the slow path.
    _gate = _cap if at is None else max(0, min(_cap, at - _drained - 1))


def _at_gate(ev) -> None:
    """An event at the gate: counted as buffer_full, or appended and the
    accepted count published."""
    if len(_buf) >= _cap:
        _next_full()
        return
    _append(ev)
    _publish()


def _decide(name: str) -> int:
    # The cache before the policy: ``set_policy`` replaces the policy, then
    # the cache, so a decision never lands in a newer policy's cache.
    ds = _decisions
    d = _policy.decide(name)
    if len(ds) > 4096:
        ds.clear()
    ds[name] = d
    return d


def _hash_cid(cid: str) -> int:
    h = ((zlib.crc32(cid.encode("utf-8")) * MIX) & MASK)
    if len(_cid_hash) > 10_000:
        _cid_hash.clear()
    _cid_hash[cid] = h
    return h


def emit(
    name: str,
    measurements: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    correlation_id: Optional[str] = None,
) -> None:
    """Record one event (name relative to ``snakepit.python.``). Never blocks.

    Measurements are numbers (int, float, bool) or strings; metadata values are
    turned into strings. Do not mutate the dicts after passing them.
    """
    d = _decisions.get(name)
    if d is None:
        d = _decide(name)
    if d < 0:
        _DROP_NEXT[d]()
        return
    if correlation_id is None:
        correlation_id = _cid_get()
    ctx = _span_get()
    if d:
        if correlation_id:
            h = _cid_hash.get(correlation_id)
            if h is None:
                h = _hash_cid(correlation_id)
        elif ctx is not None:
            h = (ctx[0] * MIX) & MASK
        else:
            h = (_getrandbits(64) * MIX) & MASK
        if h >= d:
            _next_sampled()
            return
    if len(_buf) < _gate:
        _append((_time_ns(), name, measurements, metadata, correlation_id, ctx, False))
    else:
        _at_gate((_time_ns(), name, measurements, metadata, correlation_id, ctx, False))


def emit_span_event(name, measurements, metadata, cid, ctx) -> None:
    """Like emit, for span start/stop/exception: keyed on the span, carries span_name."""
    if not span_event_kept(name, cid, ctx[0]):
        return
    if len(_buf) < _gate:
        _append((_time_ns(), name, measurements, metadata, cid, ctx, True))
    else:
        _at_gate((_time_ns(), name, measurements, metadata, cid, ctx, True))


def span_event_kept(name: str, cid: Optional[str], span_id: int) -> bool:
    """Apply the policy to a span event exactly as the emit path does, without
    buffering it: True if it is kept; a drop is counted by reason.

    Used for call events the host emits itself from CallReply.telemetry.
    """
    d = _decisions.get(name)
    if d is None:
        d = _decide(name)
    if d:
        if d < 0:
            _DROP_NEXT[d]()
            return False
        if cid:
            h = _cid_hash.get(cid)
            if h is None:
                h = _hash_cid(cid)
        else:
            h = (span_id * MIX) & MASK
        if h >= d:
            _next_sampled()
            return False
    return True


_CALL_EVENT_NAMES = ("call.start", "call.stop", "call.exception", "tool.execution.start",
                     "tool.execution.stop", "tool.execution.exception")
# (policy, whether it keeps every call event): computed once per policy.
_all_kept_cache: tuple = (None, False)


def call_events_all_kept() -> bool:
    """True when the policy keeps every call/tool span event unconditionally."""
    cached = _all_kept_cache
    if cached[0] is _policy:
        return cached[1]
    return _compute_all_kept()


def _compute_all_kept() -> bool:
    global _all_kept_cache
    p = _policy
    ds = _decisions
    kept = True
    for name in _CALL_EVENT_NAMES:
        d = ds.get(name)
        if d is None:
            d = _decide(name)
        if d:
            kept = False
            break
    _all_kept_cache = (p, kept)
    return kept


# Characters of a span's traceback kept (the host keeps 1024 bytes).
_TRACEBACK_CHARS = 1000
_new = object.__new__
_span_reset = span_var.reset
# Root trace ids: _TRACE_PREFIX as the high 64 bits of an int.
_TRACE_HIGH = int(_TRACE_PREFIX, 16) << 64


class _Span:
    """A span that records its events (see ``span``)."""

    __slots__ = ("name", "metadata", "correlation_id", "_names", "_ctx", "_token", "_t0",
                 "_cid")

    def __call__(self, fn: Callable) -> Callable:
        """Decorate ``fn``: each call runs in a new span of this name."""
        return decorate(fn, span, self.name, self.metadata, self.correlation_id)

    def __enter__(self) -> _Span:
        parent = _span_get()
        sid = _getrandbits(64) or 1
        if parent is None:
            ctx = (sid, 0, (_TRACE_HIGH | sid).to_bytes(16, "big").hex(), self.name, None)
        else:
            ctx = (sid, parent[0], parent[2], self.name, parent[4])
        self._ctx = ctx
        self._token = _span_set(ctx)
        self._cid = cid = self.correlation_id or _cid_get()
        ev = self._names[0]
        if _decisions.get(ev) == 0 and len(_buf) < _gate:
            # Kept unconditionally (the common case): no calls on the way.
            now = _time_ns()
            _append((now, ev, {"system_time": now}, self.metadata, cid, ctx, True))
        else:
            emit_span_event(ev, {"system_time": _time_ns()}, self.metadata, cid, ctx)
        self._t0 = _monotonic_ns()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = _monotonic_ns() - self._t0
        try:
            _span_reset(self._token)
        except ValueError:  # exited in another context (e.g. a generator); keep going
            pass
        if exc_type is None:
            ev = self._names[1]
            if _decisions.get(ev) == 0 and len(_buf) < _gate:
                _append((_time_ns(), ev, {"duration": duration}, self.metadata, self._cid,
                         self._ctx, True))
            else:
                emit_span_event(ev, {"duration": duration}, self.metadata, self._cid, self._ctx)
        else:
            md = dict(self.metadata) if self.metadata else {}
            md["error_type"] = exc_type.__name__
            md["error_message"] = str(exc)[:1024]
            # Its end: the frame that raised and the exception line.
            md["traceback"] = "".join(_traceback.format_exception(exc_type, exc, tb))[
                -_TRACEBACK_CHARS:]
            emit_span_event(self._names[2], {"duration": duration}, md, self._cid, self._ctx)
        return False

    @property
    def span_id(self) -> int:
        """This span's id (a random non-zero u64); set when the span is entered."""
        return self._ctx[0]

    @property
    def trace_id(self) -> str:
        """The trace this span belongs to (32 lowercase hex digits); set when
        the span is entered."""
        return self._ctx[2]


# Per span name, for the policy in force: the shared _Dropped instance when
# the policy drops all of its events, else the names of its three events.
# ``set_policy`` starts it afresh, as ``_decisions``.
_span_modes: Dict[str, Any] = {}


def _span_mode(name: str):
    modes = _span_modes  # before the decisions: see _decide
    names = (name + ".start", name + ".stop", name + ".exception")
    ds = [_decisions.get(n) for n in names]
    ds = [_decide(n) if d is None else d for n, d in zip(names, ds, strict=True)]
    if all(d < 0 for d in ds):
        if ds[0] == ds[1] == ds[2]:
            mode = _dropped_whole(_PAIR[ds[0]])
        else:
            mode = _new_dropped(tuple(_DROP_NEXT[d] for d in ds))
        mode.name = name
        mode.metadata = mode.correlation_id = None
    else:
        mode = names
    if len(modes) > 4096:
        modes.clear()
    modes[name] = mode
    return mode


def span(name: str, metadata: Optional[Mapping[str, Any]] = None,
         correlation_id: Optional[str] = None):
    """``with telemetry.span(name, metadata):`` — emits <name>.start/.stop/.exception.

    start: measurement system_time (unix ns); stop: duration (monotonic ns);
    exception: duration plus metadata error_type, error_message and traceback
    (its last 1000 characters). Each span
    has a random non-zero span_id, the enclosing span (or the host call span)
    as parent, and the current trace id; the span is current inside the block.
    ``correlation_id`` (the reference system's third argument) is the id its
    three events carry; by default the current one.

    When the policy in force drops all three events (telemetry disabled, or
    the name filtered out), the span records nothing and costs almost
    nothing: it only counts its dropped events (both when it is entered, if
    they drop for one reason), is not current inside, and its ``span_id``
    is 0. The policy is read when the span is made; a policy
    change applies from the next span.

    A span is also a decorator (``@telemetry.span("load")``) of a function,
    a coroutine function or a (sync or async) generator function: every
    call is one span (for a generator, from the first item to exhaustion or
    close, current only while the generator runs). See ``_decorate``.
    """
    try:
        mode = _span_modes[name]
    except KeyError:
        mode = _span_mode(name)
    if type(mode) is tuple:
        s = _new(_Span)
        s.name = name
        s.metadata = metadata
        s.correlation_id = correlation_id
        s._names = mode
        return s
    if metadata is None and correlation_id is None:
        return mode
    s = mode._again()
    s.name = name
    s.metadata = metadata
    s.correlation_id = correlation_id
    return s


# --------------------------------------------------------------------------
# Policy control
# --------------------------------------------------------------------------


def policy() -> Policy:
    """The policy in force."""
    return _policy


def set_policy(p: Policy) -> None:
    """Install a policy (thread-safe); the per-name decision cache starts afresh."""
    global _policy, _decisions, _span_modes
    with _policy_lock:
        _policy = p
        # In this order: a reader that sees a new cache sees the new policy.
        _decisions = {}
        _span_modes = {}
    for cb in list(_policy_listeners):
        try:
            cb(p)
        except Exception:  # noqa: BLE001
            _log.exception("policy listener failed")


def add_policy_listener(cb) -> None:
    """Call ``cb(policy)`` after every ``set_policy``."""
    _policy_listeners.append(cb)


def remove_policy_listener(cb) -> None:
    """Stop calling ``cb`` (no error if it was not added)."""
    try:
        _policy_listeners.remove(cb)
    except ValueError:
        pass


def apply_control(msg) -> bool:
    """Apply one TelemetryControl message (see ``policy_from_control``).
    Returns False (and logs) if it is malformed; the policy is then unchanged."""
    try:
        new = policy_from_control(_policy, msg)
    except PolicyError as e:
        _log.warning("ignoring malformed telemetry control (%s): %s",
                     msg.WhichOneof("control"), e)
        return False
    set_policy(new)
    return True


# --------------------------------------------------------------------------
# Capacity and drop counters
# --------------------------------------------------------------------------


def buffer_capacity() -> int:
    """Most events the buffer holds; an emit beyond it counts ``buffer_full``."""
    return _cap


def set_buffer_capacity(n: int) -> None:
    """Sets the buffer capacity (at least 1 event)."""
    global _cap
    _cap = max(1, int(n))
    regate()


def add_encode_errors(n: int) -> None:
    """Count ``n`` events the encoder could not encode (``encode_error``)."""
    c = _counters[4]
    for _ in range(n):
        next(c)


def count_log_drop() -> None:
    """Count one log record dropped (``logs_dropped``)."""
    next(_counters[5])


def drop_counts() -> Tuple[int, ...]:
    """Cumulative (buffer_full, sampled_out, filtered, disabled, encode_error, logs_dropped)."""
    return tuple(count_value(c) + 2 * p.value
                 for c, p in zip(_counters, _pair_tallies, strict=True))


def drop_counts_dict() -> Dict[str, int]:
    """``drop_counts`` by reason name."""
    return dict(zip(DROP_REASONS, drop_counts(), strict=True))
