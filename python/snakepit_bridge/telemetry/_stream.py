"""The consumer side of the event buffer: the telemetry stream attaches,
drains batches, puts back what it could not send, and records what the host
was told is still pending."""

from __future__ import annotations

import mmap
import os
import struct

from . import _buffer
from ._buffer import _buf

_streams_attached = 0
# TelemetryBatch.pending of the last batch the stream handed to gRPC, and
# how many batches it has handed over.
_pending_written = 0
_batches_written = 0
# The shared counters file (``open_counters``): the worker's pid, then the
# events accepted so far, little-endian u64s.
COUNTERS_LAYOUT = struct.Struct("<QQ")
_accepted_at = struct.Struct("<Q").pack_into
_counters: mmap.mmap | None = None


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
    if out:
        _buffer._drained += len(out)
        _buffer.regate()
    return out


def requeue(events: list) -> None:
    """Put drained but unsent events back at the front of the buffer, in order."""
    if events:
        _buf.extendleft(reversed(events))
        _buffer._drained -= len(events)
        _buffer.regate()


def accepted() -> int:
    """Events accepted into the buffer since the worker started (drained
    or still held). Read while other threads emit or drain, it may miss the
    events being moved at that moment: a lower bound."""
    return _buffer._drained + len(_buf)


def open_counters(path: str) -> None:
    """Keeps the accepted-events count in the file ``path`` (created 0600,
    mapped in memory): the pid, then ``accepted()``, rewritten once
    ``PUBLISH_EVERY`` events were accepted since the last rewrite, and at
    every batch written. A host reads it after the worker died to report the
    events it accepted and never sent (``worker_exited``), even when no
    batch left after them; it may miss the last ``PUBLISH_EVERY - 1``."""
    global _counters
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, COUNTERS_LAYOUT.size)
        mm = mmap.mmap(fd, COUNTERS_LAYOUT.size)
    finally:
        os.close(fd)
    COUNTERS_LAYOUT.pack_into(mm, 0, os.getpid(), accepted())
    _counters = mm
    _buffer._publish = publish_accepted
    _buffer._publish_at = accepted() + _buffer.PUBLISH_EVERY
    _buffer.regate()


def close_counters(path: str) -> None:
    """Stops publishing and removes the file (a worker stopping cleanly,
    its events flushed, leaves nothing to count)."""
    global _counters
    _buffer._publish = _buffer._no_publish
    _buffer._publish_at = None
    _buffer.regate()
    _counters = None
    try:
        os.unlink(path)
    except OSError:
        pass


def publish_accepted() -> None:
    """Rewrites the accepted-events count in the counters file, if open."""
    mm = _counters
    if mm is not None:
        n = accepted()
        _accepted_at(mm, 8, n)
        _buffer._publish_at = n + _buffer.PUBLISH_EVERY
        _buffer.regate()


def pending(leftover: int = 0) -> int:
    """Events accepted and not yet sent: the buffer plus ``leftover`` events
    drained for a batch but not encoded into it (TelemetryBatch.pending)."""
    return len(_buf) + leftover


def note_batch_written(unsent: int) -> None:
    """Record that the stream wrote a batch whose ``pending`` was ``unsent``."""
    global _pending_written, _batches_written
    _pending_written = unsent
    _batches_written += 1
    publish_accepted()


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
