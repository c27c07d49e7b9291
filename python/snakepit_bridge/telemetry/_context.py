"""Correlation id and span context (contextvars), W3C traceparent parsing.

The current span is a tuple ``(span_id, parent_span_id, trace_id, span_name,
incoming_traceparent)``: the emit path reads it with one ``ContextVar.get``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
from typing import Iterable, List, Mapping, Optional, Tuple, Union

CORRELATION_HEADER = "x-snakepit-correlation-id"
TRACEPARENT_HEADER = "traceparent"

cid_var: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "snakepit_correlation_id", default=None
)
# Current span context: (span_id, parent_span_id, trace_id, span_name, traceparent_in)
span_var: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar(
    "snakepit_span", default=None
)


def new_correlation_id() -> str:
    """Return a fresh correlation id (a UUID4 string). Does not make it current.

    Built as ``uuid.uuid4()`` builds it (version 4, RFC 4122 variant), without
    importing ``uuid``: that module (and ``platform`` behind it) is not loaded
    before a worker is ready."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def set_correlation_id(correlation_id: Optional[str]) -> contextvars.Token:
    """Make ``correlation_id`` current; returns a token for ``reset_correlation_id``."""
    return cid_var.set(correlation_id or None)


def get_correlation_id(default: Optional[str] = None) -> Optional[str]:
    """The current correlation id, or ``default`` (None unless given) when
    none is set."""
    cid = cid_var.get()
    return default if cid is None else cid


def reset_correlation_id(token: Optional[contextvars.Token] = None) -> None:
    """Restore the id current before the ``set_correlation_id`` that returned
    ``token`` (the reference system's form), or, without a token, clear the
    current one (the guide's form)."""
    if token is not None:
        cid_var.reset(token)
    else:
        cid_var.set(None)


def current_span() -> Optional[dict]:
    """The current span context as a dict, or None outside any span."""
    ctx = span_var.get()
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
    """W3C traceparent naming the current span (for outgoing calls), or None.

    Its trace flags are those of the call's incoming traceparent (``01``,
    sampled, when it had none), so an unsampled caller stays unsampled.
    """
    ctx = span_var.get()
    if ctx is None or not ctx[2] or not ctx[0]:
        return None
    tp = ctx[4]
    flags = tp.strip()[53:55] if tp and parse_traceparent(tp) is not None else "01"
    return f"00-{ctx[2]}-{ctx[0]:016x}-{flags.lower()}"


def outgoing_metadata(
    initial: Union[Iterable[Tuple[str, str]], Mapping[str, str], None] = None,
) -> List[Tuple[str, str]]:
    """gRPC metadata (a list of ``(key, value)`` pairs) carrying the current
    correlation id and traceparent, after the pairs of ``initial`` (pairs, or
    a mapping's items), as the reference system's ``outgoing_metadata(initial)``.
    A pair of ``initial`` with either header is replaced by the current value
    when there is one, and kept otherwise. ``initial`` is not modified.
    """
    md: List[Tuple[str, str]] = []
    if initial:
        md.extend(initial.items() if isinstance(initial, Mapping) else initial)
    cid = cid_var.get()
    tp = current_traceparent()
    if md and (cid or tp):
        ours = {k for k, v in ((CORRELATION_HEADER, cid), (TRACEPARENT_HEADER, tp)) if v}
        md = [(k, v) for k, v in md if str(k).lower() not in ours]
    if cid:
        md.append((CORRELATION_HEADER, cid))
    if tp:
        md.append((TRACEPARENT_HEADER, tp))
    return md


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = cid_var.get() or "-"
        return True


def correlation_filter() -> logging.Filter:
    """A logging.Filter that sets ``record.correlation_id`` (``-`` when none)."""
    return _CorrelationFilter()


_fromhex = bytes.fromhex
_ZERO_TRACE = "0" * 32


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


def new_span_id() -> int:
    """A random non-zero u64."""
    while True:
        v = random.getrandbits(64)
        if v:
            return v


def new_trace_id() -> str:
    """A random non-zero 128-bit trace id as 32 lowercase hex digits."""
    while True:
        v = random.getrandbits(128)
        if v:
            return f"{v:032x}"


def enter_call_context(
    correlation_id: Optional[str], traceparent: Optional[str], name: str = "call"
) -> Tuple[contextvars.Token, contextvars.Token, tuple]:
    """Make a host call's correlation id and trace context current.

    Creates the worker's call span context: a child of the traceparent's span
    (or the root of a new trace). Returns ``(cid token, span token, span
    context)``; pass it to ``exit_call_context``.
    """
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        ctx = (new_span_id(), 0, new_trace_id(), name, traceparent or None)
    else:
        ctx = (new_span_id(), parsed[1], parsed[0], name, traceparent)
    return cid_var.set(correlation_id or None), span_var.set(ctx), ctx


def exit_call_context(tokens) -> None:
    """Restore the context ``enter_call_context`` replaced."""
    ct, st, _ = tokens
    try:
        span_var.reset(st)
        cid_var.reset(ct)
    except ValueError:
        pass
