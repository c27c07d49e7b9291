"""The consumer side of the event buffer: the telemetry stream attaches,
drains batches, puts back what it could not send, and records what the host
was told is still pending."""

from __future__ import annotations

from ._buffer import _buf

_streams_attached = 0
# TelemetryBatch.pending of the last batch the stream handed to gRPC, and
# how many batches it has handed over.
_pending_written = 0
_batches_written = 0


def stream_attached() -> bool:
    """True while a host holds this worker's telemetry stream.

    While none does, emitted events wait in the bounded buffer (see
    ``buffer_capacity``); what exceeds it is counted as ``buffer_full`` and
    reported to the next host that attaches.
    """
    return _streams_attached > 0


def attach_stream() -> None:
    """A telemetry stream to a host opened (pair with ``detach_stream``)."""
    global _streams_attached
    _streams_attached += 1


def detach_stream() -> None:
    """A telemetry stream to a host ended."""
    global _streams_attached
    _streams_attached = max(0, _streams_attached - 1)


def buffered() -> int:
    """Events in the buffer now (emitted, not yet drained by the stream)."""
    return len(_buf)


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
