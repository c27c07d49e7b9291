"""Worker-side telemetry: emit, spans, correlation ids, policy, buffering.

Public API (the observability guide's, verbatim)::

    from snakepit_bridge import telemetry
    telemetry.emit("tool.execution.stop", {"duration": 1234}, {"tool": "predict"},
                   correlation_id="abc-123")
    with telemetry.span("inference", {"model": "gpt-4"}):
        ...
    cid = telemetry.new_correlation_id()
    token = telemetry.set_correlation_id(cid)
    telemetry.get_correlation_id()
    telemetry.reset_correlation_id()

Design: ``emit`` does almost nothing on the calling thread. It looks up a
per-name decision precomputed from the policy (enabled / filter / sampling
threshold), computes the sampling key only when a rate below 1 applies, and
appends one tuple to a bounded ``collections.deque``. No locks, no protobuf.
The telemetry stream drains the deque in batches and encodes them
(``_wire.BatchEncoder``). Events emitted before a stream attaches wait in the
same buffer. Every drop is counted by reason; the cumulative counters travel
in every batch.

Names are relative to ``snakepit.python.``: ``emit("call.stop", ...)`` is the
host event ``snakepit.python.call.stop``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import math
import os
import random
import re
import threading
import time
import uuid
import zlib
from collections import deque
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "CORRELATION_HEADER",
    "TRACEPARENT_HEADER",
    "emit",
    "span",
    "new_correlation_id",
    "set_correlation_id",
    "get_correlation_id",
    "reset_correlation_id",
    "outgoing_metadata",
    "correlation_filter",
    "current_span",
    "current_traceparent",
    "Policy",
    "PolicyError",
    "sampling_keep",
    "sampling_threshold",
    "pattern_matches",
]

CORRELATION_HEADER = "x-snakepit-correlation-id"
TRACEPARENT_HEADER = "traceparent"

_log = logging.getLogger("snakepit_bridge.telemetry")

# --------------------------------------------------------------------------
# Context (contextvars): correlation id and current span
# --------------------------------------------------------------------------

_cid_var: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "snakepit_correlation_id", default=None
)
# Current span context: (span_id, parent_span_id, trace_id, span_name, traceparent_in)
_span_var: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar(
    "snakepit_span", default=None
)
_cid_get = _cid_var.get
_span_get = _span_var.get
_span_set = _span_var.set


def new_correlation_id() -> str:
    """Return a fresh correlation id (a UUID4 string). Does not make it current."""
    return str(uuid.uuid4())


def set_correlation_id(correlation_id: Optional[str]) -> contextvars.Token:
    """Make ``correlation_id`` current; returns a token for ``reset_correlation_id``."""
    return _cid_var.set(correlation_id or None)


def get_correlation_id() -> Optional[str]:
    """The current correlation id, or None."""
    return _cid_var.get()


def reset_correlation_id(token: Optional[contextvars.Token] = None) -> None:
    """Restore the previous id (with a token) or clear the current one."""
    if token is not None:
        _cid_var.reset(token)
    else:
        _cid_var.set(None)


def current_span() -> Optional[dict]:
    """The current span context as a dict, or None outside any span."""
    ctx = _span_var.get()
    if ctx is None:
        return None
    return {
        "span_id": ctx[0],
        "parent_span_id": ctx[1],
        "trace_id": ctx[2],
        "span_name": ctx[3],
        "incoming_traceparent": ctx[4],
    }


def current_traceparent() -> Optional[str]:
    """W3C traceparent naming the current span (for outgoing calls), or None."""
    ctx = _span_var.get()
    if ctx is None or not ctx[2] or not ctx[0]:
        return None
    return f"00-{ctx[2]}-{ctx[0]:016x}-01"


def outgoing_metadata() -> List[Tuple[str, str]]:
    """gRPC metadata carrying the current correlation id and traceparent."""
    md = []
    cid = _cid_var.get()
    if cid:
        md.append((CORRELATION_HEADER, cid))
    tp = current_traceparent()
    if tp:
        md.append((TRACEPARENT_HEADER, tp))
    return md


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _cid_var.get() or "-"
        return True


def correlation_filter() -> logging.Filter:
    """A logging.Filter that sets ``record.correlation_id`` (``-`` when none)."""
    return _CorrelationFilter()


def parse_traceparent(tp: Optional[str]) -> Optional[Tuple[str, int]]:
    """Return (trace_id, parent span id) from a W3C traceparent, or None if invalid.

    Accepts ``vv-<32 hex>-<16 hex>-ff`` after stripping whitespace, in either
    case; version ``ff``, an all-zero trace id and an all-zero span id are
    invalid. It runs on every call, so there is no regex (twice the time):
    with the three dashes in place, ``bytes.fromhex`` of the rest gives 26
    bytes exactly when the rest is 52 hex digits.
    """
    if not tp:
        return None
    s = tp if len(tp) == 55 else tp.strip()
    if len(s) != 55 or s[2] != "-" or s[35] != "-" or s[52] != "-":
        return None
    try:
        b = _fromhex(s.replace("-", ""))
    except ValueError:
        return None
    if len(b) != 26 or b[0] == 255:
        return None
    trace_id = s[3:35].lower()
    span_id = int(s[36:52], 16)
    if not span_id or trace_id == _ZERO_TRACE:
        return None
    return trace_id, span_id


_fromhex = bytes.fromhex
_ZERO_TRACE = "0" * 32


def new_span_id() -> int:
    """A random non-zero u64."""
    while True:
        v = random.getrandbits(64)
        if v:
            return v


def new_trace_id() -> str:
    while True:
        v = random.getrandbits(128)
        if v:
            return f"{v:032x}"


# --------------------------------------------------------------------------
# Sampling rule (shared with the Rust host, bit for bit)
# --------------------------------------------------------------------------

_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_TWO64 = float(1 << 64)


def sampling_threshold(rate: float) -> Optional[int]:
    """floor(rate * 2**64) as an int; None means keep all (rate >= 1)."""
    if rate >= 1.0:
        return None
    if not rate > 0.0:  # also NaN
        return 0
    return int(rate * _TWO64)  # exact: scaling by a power of two


def key_from_correlation_id(cid: str) -> int:
    return zlib.crc32(cid.encode("utf-8"))


def mix(key: int) -> int:
    return (key * _MIX) & _MASK


def sampling_keep(key: int, rate: float) -> bool:
    """The shared rule: keep iff mix(key) < floor(rate * 2**64) (rate >= 1 keeps all)."""
    t = sampling_threshold(rate)
    if t is None:
        return True
    return mix(key) < t


# --------------------------------------------------------------------------
# Patterns and policy
# --------------------------------------------------------------------------


class PolicyError(ValueError):
    """A malformed control: bad rate, bad pattern or bad log level."""


_PATTERN_OK = re.compile(r"^[\x21-\x7e]+$")


def _compile_pattern(p: str):
    if not isinstance(p, str) or not _PATTERN_OK.match(p):
        raise PolicyError(f"invalid pattern {p!r}: must be non-empty printable ASCII")
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p)
    full = p.startswith("snakepit.")
    return full, re.compile(rx, re.S).fullmatch


def pattern_matches(pattern: str, wire_name: str) -> bool:
    """Does ``pattern`` match the Python event whose wire name is ``wire_name``?"""
    full, m = _compile_pattern(pattern)
    target = ("snakepit.python." if full else "python.") + wire_name
    return m(target) is not None


def _check_rate(rate: float) -> float:
    try:
        r = float(rate)
    except (TypeError, ValueError) as e:
        raise PolicyError(f"invalid rate {rate!r}") from e
    if math.isnan(r) or r < 0.0 or r > 1.0:
        raise PolicyError(f"rate {rate!r} outside [0, 1]")
    return r


LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}


class Policy:
    """An immutable-by-convention telemetry policy (see the proto's rule)."""

    __slots__ = (
        "enabled", "sampling_rate", "pattern_rates", "allow", "deny", "log_level", "version",
        "_rates_c", "_allow_c", "_deny_c",
    )

    def __init__(
        self,
        enabled: bool = True,
        sampling_rate: float = 1.0,
        pattern_rates: Sequence[Tuple[str, float]] = (),
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        log_level: str = "",
        version: int = 0,
    ) -> None:
        self.enabled = bool(enabled)
        self.sampling_rate = _check_rate(sampling_rate)
        self.pattern_rates = [(str(p), _check_rate(r)) for p, r in pattern_rates]
        self.allow = list(allow)
        self.deny = list(deny)
        if log_level and log_level.lower() not in LOG_LEVELS:
            raise PolicyError(
                f"invalid log_level {log_level!r}; allowed: {', '.join(LOG_LEVELS)}"
            )
        self.log_level = log_level.lower() if log_level else ""
        self.version = int(version)
        self._rates_c = [(_compile_pattern(p), r) for p, r in self.pattern_rates]
        self._allow_c = [_compile_pattern(p) for p in self.allow]
        self._deny_c = [_compile_pattern(p) for p in self.deny]

    def copy(self, **changes) -> Policy:
        kw = dict(
            enabled=self.enabled, sampling_rate=self.sampling_rate,
            pattern_rates=list(self.pattern_rates), allow=list(self.allow),
            deny=list(self.deny), log_level=self.log_level, version=self.version,
        )
        kw.update(changes)
        return Policy(**kw)

    @staticmethod
    def _match(compiled, wire_name: str) -> bool:
        full, m = compiled
        return m(("snakepit.python." if full else "python.") + wire_name) is not None

    def rate_for(self, wire_name: str) -> float:
        """The sampling rate for an event (stop/exception look up the start name)."""
        if wire_name.endswith(".stop"):
            wire_name = wire_name[: -len(".stop")] + ".start"
        elif wire_name.endswith(".exception"):
            wire_name = wire_name[: -len(".exception")] + ".start"
        for c, r in self._rates_c:
            if self._match(c, wire_name):
                return r
        return self.sampling_rate

    def decide(self, wire_name: str) -> int:
        """Per-name decision: 0 keep all, <0 drop code, >0 sampling threshold."""
        if not self.enabled:
            return _DISABLED
        for c in self._deny_c:
            if self._match(c, wire_name):
                return _FILTERED
        if self._allow_c and not any(self._match(c, wire_name) for c in self._allow_c):
            return _FILTERED
        t = sampling_threshold(self.rate_for(wire_name))
        if t is None:
            return 0
        if t == 0:
            return _SAMPLED_ALL
        return t

    def describe(self) -> dict:
        return {
            "enabled": self.enabled, "sampling_rate": self.sampling_rate,
            "pattern_rates": list(self.pattern_rates), "allow": list(self.allow),
            "deny": list(self.deny), "log_level": self.log_level, "version": self.version,
        }


# drop reasons; order = DropCounts field order
DROP_REASONS = ("buffer_full", "sampled_out", "filtered", "disabled", "encode_error",
                "logs_dropped")
_DISABLED = -4
_FILTERED = -3
_SAMPLED_ALL = -2  # rate 0: counted as sampled_out


def _count_value(c: itertools.count) -> int:
    # itertools.count repr is "count(N)"; next() on it is atomic under the GIL,
    # which makes these exact counters without a lock on the hot path.
    return int(repr(c)[6:-1])


# --------------------------------------------------------------------------
# Hot state (module globals: fastest lookups on the emit path)
# --------------------------------------------------------------------------

DEFAULT_BUFFER = 10_000


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


_policy = Policy()
_decisions: Dict[str, int] = {}
_cid_hash: Dict[str, int] = {}
_buf: deque = deque()
_append = _buf.append
_cap = _env_int("SNAKEPIT_TELEMETRY_BUFFER", DEFAULT_BUFFER)
_counters = [itertools.count() for _ in DROP_REASONS]
_next_full = _counters[0].__next__
_next_sampled = _counters[1].__next__
_DROP_NEXT = {
    _DISABLED: _counters[3].__next__,
    _FILTERED: _counters[2].__next__,
    _SAMPLED_ALL: _counters[1].__next__,
}
_policy_lock = threading.Lock()
_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_getrandbits = random.getrandbits
_policy_listeners: list = []
# Root spans (outside any call) get trace id = per-process random 64-bit prefix +
# the span's own random id: unique, and much cheaper than 128 fresh random bits.
_TRACE_PREFIX = f"{random.SystemRandom().getrandbits(64) or 1:016x}"


def _decide(name: str) -> int:
    d = _policy.decide(name)
    ds = _decisions
    if len(ds) > 4096:
        ds.clear()
    ds[name] = d
    return d


def _hash_cid(cid: str) -> int:
    h = ((zlib.crc32(cid.encode("utf-8")) * _MIX) & _MASK)
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
            h = (ctx[0] * _MIX) & _MASK
        else:
            h = (_getrandbits(64) * _MIX) & _MASK
        if h >= d:
            _next_sampled()
            return
    if len(_buf) >= _cap:
        _next_full()
        return
    _append((_time_ns(), name, measurements, metadata, correlation_id, ctx, False))


def _emit_span_event(name, measurements, metadata, cid, ctx) -> None:
    """Like emit, for span start/stop/exception: keyed on the span, carries span_name."""
    if not span_event_kept(name, cid, ctx[0]):
        return
    if len(_buf) >= _cap:
        _next_full()
        return
    _append((_time_ns(), name, measurements, metadata, cid, ctx, True))


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
            h = (span_id * _MIX) & _MASK
        if h >= d:
            _next_sampled()
            return False
    return True


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


# (policy, whether it keeps every call event): computed once per policy.
_all_kept_cache: tuple = (None, False)


_CALL_EVENT_NAMES = ("call.start", "call.stop", "call.exception", "tool.execution.start",
                     "tool.execution.stop", "tool.execution.exception")


_span_names: Dict[str, Tuple[str, str, str]] = {}


def _span_event_names(name: str) -> Tuple[str, str, str]:
    names = (name + ".start", name + ".stop", name + ".exception")
    if len(_span_names) > 4096:
        _span_names.clear()
    _span_names[name] = names
    return names


class span:  # noqa: N801 - the guide's API is telemetry.span(...)
    """``with telemetry.span(name, metadata):`` — emits <name>.start/.stop/.exception.

    start: measurement system_time (unix ns); stop: duration (monotonic ns);
    exception: duration plus metadata error_type and error_message. Each span
    has a random non-zero span_id, the enclosing span (or the host call span)
    as parent, and the current trace id; the span is current inside the block.
    """

    __slots__ = ("name", "metadata", "_ctx", "_token", "_t0", "_cid", "_names")

    def __init__(self, name: str, metadata: Optional[Mapping[str, Any]] = None) -> None:
        self.name = name
        self.metadata = metadata

    def __enter__(self) -> span:
        name = self.name
        names = _span_names.get(name) or _span_event_names(name)
        self._names = names
        parent = _span_get()
        sid = _getrandbits(64) or 1
        if parent is None:
            ctx = (sid, 0, f"{_TRACE_PREFIX}{sid:016x}", name, None)
        else:
            ctx = (sid, parent[0], parent[2], name, parent[4])
        self._ctx = ctx
        self._token = _span_set(ctx)
        self._cid = cid = _cid_get()
        ev = names[0]
        if _decisions.get(ev) == 0 and len(_buf) < _cap:
            # Kept unconditionally (the common case): no calls on the way.
            now = _time_ns()
            _append((now, ev, {"system_time": now}, self.metadata, cid, ctx, True))
        else:
            _emit_span_event(ev, {"system_time": _time_ns()}, self.metadata, cid, ctx)
        self._t0 = _monotonic_ns()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = _monotonic_ns() - self._t0
        try:
            _span_var.reset(self._token)
        except ValueError:  # exited in another context (e.g. a generator); keep going
            pass
        if exc_type is None:
            ev = self._names[1]
            if _decisions.get(ev) == 0 and len(_buf) < _cap:
                _append((_time_ns(), ev, {"duration": duration}, self.metadata, self._cid,
                         self._ctx, True))
            else:
                _emit_span_event(ev, {"duration": duration}, self.metadata, self._cid, self._ctx)
        else:
            md = dict(self.metadata) if self.metadata else {}
            md["error_type"] = exc_type.__name__
            md["error_message"] = str(exc)[:1024]
            _emit_span_event(self._names[2], {"duration": duration}, md, self._cid, self._ctx)
        return False

    @property
    def span_id(self) -> int:
        return self._ctx[0]

    @property
    def trace_id(self) -> str:
        return self._ctx[2]


def enter_call_context(
    correlation_id: Optional[str], traceparent: Optional[str], name: str = "call"
) -> Tuple[contextvars.Token, contextvars.Token, tuple]:
    """Make a host call's correlation id and trace context current.

    Creates the worker's call span context: a child of the traceparent's span
    (or the root of a new trace). Returns tokens for ``exit_call_context``.
    """
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        ctx = (new_span_id(), 0, new_trace_id(), name, traceparent or None)
    else:
        ctx = (new_span_id(), parsed[1], parsed[0], name, traceparent)
    return _cid_var.set(correlation_id or None), _span_var.set(ctx), ctx


def exit_call_context(tokens) -> None:
    ct, st, _ = tokens
    try:
        _span_var.reset(st)
        _cid_var.reset(ct)
    except ValueError:
        pass


# --------------------------------------------------------------------------
# Policy control
# --------------------------------------------------------------------------


def policy() -> Policy:
    return _policy


def set_policy(p: Policy) -> None:
    """Install a policy (thread-safe); the per-name decision cache starts afresh."""
    global _policy, _decisions
    with _policy_lock:
        _policy = p
        _decisions = {}
    for cb in list(_policy_listeners):
        try:
            cb(p)
        except Exception:  # noqa: BLE001
            _log.exception("policy listener failed")


def add_policy_listener(cb) -> None:
    _policy_listeners.append(cb)


def remove_policy_listener(cb) -> None:
    try:
        _policy_listeners.remove(cb)
    except ValueError:
        pass


def apply_control(msg) -> bool:
    """Apply one TelemetryControl message. Returns False (and logs) if malformed.

    policy: replaces everything; toggle: enabled; sampling: global rate when
    event_patterns is empty, else that rate for each pattern (an existing entry
    for the same pattern is updated in place, otherwise appended); filter:
    replaces allow and deny.
    """
    kind = msg.WhichOneof("control")
    try:
        cur = _policy
        if kind == "policy":
            p = msg.policy
            new = Policy(
                enabled=p.enabled,
                sampling_rate=p.sampling_rate,
                pattern_rates=[(pr.pattern, pr.rate) for pr in p.pattern_rates],
                allow=list(p.allow),
                deny=list(p.deny),
                log_level=p.log_level or cur.log_level,
                version=p.version,
            )
        elif kind == "toggle":
            new = cur.copy(enabled=msg.toggle.enabled)
        elif kind == "sampling":
            rate = _check_rate(msg.sampling.sampling_rate)
            pats = list(msg.sampling.event_patterns)
            if not pats:
                new = cur.copy(sampling_rate=rate)
            else:
                prs = list(cur.pattern_rates)
                for pat in pats:
                    _compile_pattern(pat)
                    for i, (p0, _) in enumerate(prs):
                        if p0 == pat:
                            prs[i] = (pat, rate)
                            break
                    else:
                        prs.append((pat, rate))
                new = cur.copy(pattern_rates=prs)
        elif kind == "filter":
            new = cur.copy(allow=list(msg.filter.allow), deny=list(msg.filter.deny))
        else:
            raise PolicyError("empty TelemetryControl")
    except PolicyError as e:
        _log.warning("ignoring malformed telemetry control (%s): %s", kind, e)
        return False
    set_policy(new)
    return True


# --------------------------------------------------------------------------
# Draining (used by the worker's telemetry stream and by tests)
# --------------------------------------------------------------------------


def buffer_capacity() -> int:
    return _cap


def set_buffer_capacity(n: int) -> None:
    global _cap
    _cap = max(1, int(n))


def buffered() -> int:
    return len(_buf)


_streams_attached = 0


def stream_attached() -> bool:
    """True while a host holds this worker's telemetry stream.

    While none does, emitted events wait in the bounded buffer (see
    ``buffer_capacity``); what exceeds it is counted as ``buffer_full`` and
    reported to the next host that attaches.
    """
    return _streams_attached > 0


def _stream_attach(delta: int) -> None:
    global _streams_attached
    _streams_attached = max(0, _streams_attached + delta)


def drain(max_events: int = 1000) -> list:
    """Pop up to ``max_events`` buffered event tuples (thread-safe)."""
    n = min(max_events, len(_buf))
    pop = _buf.popleft
    out = []
    add = out.append
    try:
        for _ in range(n):
            add(pop())
    except IndexError:
        pass
    return out


def requeue(events: list) -> None:
    """Put drained but unsent events back at the front of the buffer, in order."""
    if events:
        _buf.extendleft(reversed(events))


def pending(leftover: int = 0) -> int:
    """Events accepted and not yet sent: the buffer plus ``leftover`` events
    drained for a batch but not encoded into it (TelemetryBatch.pending)."""
    return len(_buf) + leftover


# TelemetryBatch.pending of the last batch the stream handed to gRPC, and
# how many batches it has handed over.
_pending_written = 0
_batches_written = 0


def note_batch_written(unsent: int) -> None:
    """Record that the stream wrote a batch whose ``pending`` was ``unsent``."""
    global _pending_written, _batches_written
    _pending_written = unsent
    _batches_written += 1


def batches_written() -> int:
    """Telemetry batches written to a host since the worker started."""
    return _batches_written


def pending_written() -> int:
    """The ``pending`` count of the last batch written to the host: events
    the host knows this worker holds, and reports lost if the worker exits."""
    return _pending_written


def add_encode_errors(n: int) -> None:
    c = _counters[4]
    for _ in range(n):
        next(c)


def count_log_drop() -> None:
    next(_counters[5])


def drop_counts() -> Tuple[int, ...]:
    """Cumulative (buffer_full, sampled_out, filtered, disabled, encode_error, logs_dropped)."""
    return tuple(_count_value(c) for c in _counters)


def drop_counts_dict() -> Dict[str, int]:
    return dict(zip(DROP_REASONS, drop_counts(), strict=True))


def event_to_dict(ev) -> dict:
    """A drained event tuple as a plain dict (tests, debugging)."""
    ts, name, meas, meta, cid, ctx, is_span = ev
    return {
        "timestamp_ns": ts, "name": name, "measurements": dict(meas or {}),
        "metadata": {k: str(v) for k, v in (meta or {}).items()},
        "correlation_id": cid or "",
        "span_id": ctx[0] if ctx else 0,
        "parent_span_id": ctx[1] if ctx else 0,
        "trace_id": ctx[2] if ctx else "",
        "span_name": ctx[3] if (ctx and is_span) else "",
    }


def _reset_for_tests(capacity: Optional[int] = None) -> None:
    """Reset buffer, counters and policy (tests only; not thread-safe vs emitters)."""
    global _counters, _next_full, _next_sampled, _DROP_NEXT, _decisions
    _buf.clear()
    _cid_hash.clear()
    _counters = [itertools.count() for _ in DROP_REASONS]
    _next_full = _counters[0].__next__
    _next_sampled = _counters[1].__next__
    _DROP_NEXT = {
        _DISABLED: _counters[3].__next__,
        _FILTERED: _counters[2].__next__,
        _SAMPLED_ALL: _counters[1].__next__,
    }
    set_policy(Policy())
    set_buffer_capacity(capacity if capacity else _env_int(
        "SNAKEPIT_TELEMETRY_BUFFER", DEFAULT_BUFFER))
