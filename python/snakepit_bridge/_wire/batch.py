"""Hand-written protobuf encoder for TelemetryBatch (hot path of the drain).

Building TelemetryEvent messages through the protobuf runtime costs ~6 µs per
event here; encoding the wire format directly, with caches for the parts that
repeat (event names, metadata pairs, correlation ids, span context), costs a
fraction of that. The output is a valid serialized ``TelemetryBatch``; tests
check it against the generated classes.
"""

from __future__ import annotations

import sys
from array import array

from .fields import (
    _I64_MAX,
    _I64_MIN,
    _SMALL,
    EncodeError,
    _ld,
    encode_value,
    string_field,
    varint,
)

_BIG_ENDIAN = sys.byteorder == "big"


# The tag and one-byte length of a TelemetryBatch.events field, by length.
_EVENT_HDR = [b"\x0a" + bytes((n,)) for n in range(128)]


_TS_LO: list = []


def _ts_lo_table() -> list:
    """Tag of timestamp_ns plus the first two varint groups (continued), by
    the low 14 bits; built once per process (16384 entries, ~0.6 MB, about
    10 ms: a pool's template builds it before it forks)."""
    if not _TS_LO:
        # Entry n is b"\x20", (n & 0x7F) | 0x80, (n >> 7) | 0x80: the three
        # columns are laid out at once, then cut (twice as fast as building
        # each entry).
        blob = bytearray(3 * 16384)
        blob[0::3] = b"\x20" * 16384
        blob[1::3] = bytes(range(0x80, 0x100)) * 128
        blob[2::3] = b"".join(bytes((0x80 | h,)) * 128 for h in range(128))
        blob = bytes(blob)
        _TS_LO.extend(blob[i:i + 3] for i in range(0, len(blob), 3))
    return _TS_LO


def _ctx_bytes(ctx, is_span) -> bytes:
    """Span context fields 6-9 of a TelemetryEvent (span_name only on span events)."""
    sid, psid, trace_id, span_name = ctx[0], ctx[1], ctx[2], ctx[3]
    chunks = []
    if sid:
        chunks.append(b"\x30" + varint(sid))
    if psid:
        chunks.append(b"\x38" + varint(psid))
    if trace_id:
        chunks.append(string_field(0x42, trace_id))
    if is_span and span_name:
        chunks.append(string_field(0x4A, span_name))
    return b"".join(chunks)


class BatchEncoder:
    """Encodes drained event tuples and log tuples into TelemetryBatch bytes.

    Event tuple layout (see telemetry/_buffer.py):
    (timestamp_ns, name, measurements, metadata, correlation_id, ctx, is_span_event)
    where ctx is None or (span_id, parent_span_id, trace_id, span_name, traceparent).
    """

    _CACHE_MAX = 4096
    # Only short strings are cached, so a worker emitting huge or endlessly
    # distinct values cannot grow the caches beyond ~4096 small entries each.
    _CACHE_STR_MAX = 256
    # A batch stops growing at this size (the rest waits for the next batch),
    # and an event whose encoding alone exceeds MAX_EVENT_BYTES is dropped as
    # an encode error: the host refuses messages over 64 MB.
    MAX_BATCH_BYTES = 4 * 1024 * 1024
    MAX_EVENT_BYTES = 8 * 1024 * 1024

    def __init__(self) -> None:
        self._names: dict = {}
        # Measurement key -> int-value prefixes by varint length.
        self._mpre: dict = {}
        # Metadata key -> {value: encoded map entry}.
        self._mpairs: dict = {}
        self._cids: dict = {}
        self._ts_hi = -1
        self._ts_hi_bytes = b""
        self._ts_mid = -1
        self._ts_tail = b""
        # Events left over by the last batch() because it reached max_bytes.
        self.leftover: list = []

    def _name(self, name: str) -> bytes:
        b = self._names.get(name)
        if b is None:
            if len(self._names) > self._CACHE_MAX:
                self._names.clear()
            b = b"".join(string_field(0x0A, p) for p in name.split("."))
            self._names[name] = b
        return b

    def event_bodies(self, events) -> tuple:
        """(serialized TelemetryEvent messages, count of events that could not
        be encoded): the events one by one, as the legacy StreamTelemetry
        RPC sends them."""
        out: list = []
        errors = self._events(events, out, 0, runs=False)
        # _events appends a field header, then the body, per encoded event.
        return out[1::2], errors

    def event_body(self, ev) -> bytes:
        """One serialized TelemetryEvent message (raises EncodeError if it cannot be)."""
        bodies, errors = self.event_bodies((ev,))
        if errors:
            raise EncodeError(f"cannot encode event {ev[1]!r}")
        return bodies[0]

    def _meas_prefixes(self, k) -> list:
        """Per measurement key: the bytes before an int value's varint, by its length.

        ``prefixes[n] + varint(v)`` (``len(varint(v)) == n``) is the whole
        ``measurements`` map entry: tag, entry length, key, value tag, value
        message length, int tag.
        """
        mkeys = self._mpre
        if len(mkeys) > self._CACHE_MAX:
            mkeys.clear()
        kb = string_field(0x0A, str(k)) + b"\x12"
        prefixes = [b""] + [
            b"\x12" + varint(len(kb) + 2 + n) + kb + _SMALL[n + 1] + b"\x08" for n in range(1, 11)
        ]
        mkeys[k] = prefixes
        return prefixes

    @staticmethod
    def _meas_entry(k, v) -> bytes:
        """A measurements map entry for any value type (the slow path)."""
        vb = encode_value(v)
        entry = string_field(0x0A, str(k)) + b"\x12" + varint(len(vb)) + vb
        return b"\x12" + varint(len(entry)) + entry

    def _meta_bytes(self, meta) -> bytes:
        """Every metadata map entry of one event, joined (pairs cached)."""
        pairs = self._mpairs
        chunks = []
        for k, v in meta.items():
            if type(v) is not str:
                v = str(v)
            by_value = pairs.get(k)
            eb = by_value.get(v) if by_value is not None else None
            if eb is None:
                eb = _ld(0x1A, string_field(0x0A, str(k)) + string_field(0x12, v))
                if len(v) <= self._CACHE_STR_MAX:
                    if by_value is None:
                        if len(pairs) > self._CACHE_MAX:
                            pairs.clear()
                        by_value = pairs[k] = {}
                    elif len(by_value) > self._CACHE_MAX:
                        by_value.clear()
                    by_value[v] = eb
            chunks.append(eb)
        return b"".join(chunks)

    def _fixed_bytes(self, name, meta, cid, ctx, is_span, meta_seen: dict) -> bytes:
        """The fields of an event that are not its measurements or timestamp:
        name, metadata, correlation id and span context, joined."""
        nb = self._names.get(name)
        if nb is None:
            nb = self._name(name)
        parts = [nb]
        if meta:
            mb = meta_seen.get(id(meta))
            if mb is None:
                mb = meta_seen[id(meta)] = self._meta_bytes(meta)
            parts.append(mb)
        if cid:
            cids = self._cids
            cb = cids.get(cid)
            if cb is None:
                cb = string_field(0x2A, str(cid))
                if len(cid) <= self._CACHE_STR_MAX:
                    if len(cids) > self._CACHE_MAX:
                        cids.clear()
                    cids[cid] = cb
            parts.append(cb)
        if ctx is not None:
            # Cached per batch by identity, as metadata are (negative keys:
            # apart from the metadata's ids in the same dict).
            key = -2 * id(ctx) - (2 if is_span else 1)
            cb = meta_seen.get(key)
            if cb is None:
                cb = meta_seen[key] = _ctx_bytes(ctx, is_span)
            parts.append(cb)
        return b"".join(parts)

    def _run(self, events, start: int, fixed: bytes):
        """An ``EventRun`` of ``events[start:]`` if at least two qualify:
        (index after the run, its serialized bytes, its event count), else None.
        ``fixed`` is the head event's fixed part (see ``_events``)."""
        head = events[start]
        ts, name, meas, meta, cid, ctx, is_span = head
        ((k, v),) = meas.items()
        if type(v) is not int or not _I64_MIN <= v <= _I64_MAX:
            return None
        stamps = [ts]
        values = [v]
        i = start + 1
        n_events = len(events)
        while i < n_events:
            e = events[i]
            if not (e[1] == name and e[3] is meta and e[5] is ctx and e[4] == cid
                    and e[6] is is_span):
                break
            m = e[2]
            if m is None or len(m) != 1:
                break
            v = m.get(k)
            if type(v) is not int or not _I64_MIN <= v <= _I64_MAX:
                break
            stamps.append(e[0])
            values.append(v)
            i += 1
        if len(stamps) < 2:
            return None
        try:
            tb = array("q", stamps)
            vb = array("q", values)
        except (TypeError, OverflowError):
            return None
        if _BIG_ENDIAN:
            tb.byteswap()
            vb.byteswap()
        pre = self._mpre.get(k)
        if pre is None:
            pre = self._meas_prefixes(k)
        # The template's one measurement, value 0 (varint 0x00).
        template = fixed + pre[1] + b"\x00"
        rb = b"".join((
            _ld(0x0A, template), _ld(0x12, tb.tobytes()), _ld(0x1A, vb.tobytes()),
        ))
        return i, rb, len(stamps)

    def _events(self, events, out: list, max_bytes: int, runs: bool = True) -> int:
        """Appends each event, as a ``TelemetryBatch.events`` field, to ``out``.

        The same bytes as ``event_body`` with the loop inlined: this is the
        worker's hottest Python. An event's bytes are its fixed part (name,
        metadata, correlation id, span context), then its measurements, then
        its timestamp (protobuf fields may come in any order). Within one
        batch the fixed part is reused for events of one name and metadata
        dict with the same correlation id and span context objects (the
        events list keeps them alive, so identities are unique here, and
        emitted dicts must not be mutated). Consecutive events that differ
        only in their timestamp and one int measurement become an EventRun
        (see ``_run``; not with ``runs=False``). Returns the number of
        events that could not be encoded.
        """
        mkeys = self._mpre
        small = _SMALL
        hdr = _EVENT_HDR
        meta_seen: dict = {}
        # name -> id(metadata) -> (metadata, correlation id, ctx, is_span,
        # fixed bytes)
        fixed_by_name: dict = {}
        ts_hi = self._ts_hi
        ts_hi_b = self._ts_hi_bytes
        ts_mid = self._ts_mid
        ts_tail = self._ts_tail
        # Built at the first batch that holds events: the first batch of a
        # stream, which the host waits for, usually holds none.
        ts_lo = _ts_lo_table() if events else _TS_LO
        max_event = self.MAX_EVENT_BYTES
        append = out.append
        errors = 0
        size = 0
        n_events = len(events)
        i = 0
        while i < n_events:
            ev = events[i]
            i += 1
            try:
                ts, name, meas, meta, cid, ctx, is_span = ev
                by_meta = fixed_by_name.get(name)
                if by_meta is None:
                    by_meta = fixed_by_name[name] = {}
                f = by_meta.get(id(meta))
                if (f is not None and f[0] is meta and f[1] == cid and f[2] is ctx
                        and f[3] is is_span):
                    body = f[4]
                else:
                    body = self._fixed_bytes(name, meta, cid, ctx, is_span, meta_seen)
                    by_meta[id(meta)] = (meta, cid, ctx, is_span, body)
                # A run: this event and the next ones that differ only in the
                # timestamp and the value of their one int measurement.
                if runs and i < n_events and events[i][3] is meta and len(meas or ()) == 1:
                    nxt = events[i]
                    if (nxt[1] == name and nxt[5] is ctx and nxt[4] == cid
                            and nxt[6] is is_span):
                        run = self._run(events, i - 1, body)
                        if run is not None:
                            i, rb, count = run
                            n = len(rb)
                            if n > max_event:
                                errors += count
                                continue
                            append(b"\x3a" + varint(n))
                            append(rb)
                            if max_bytes:
                                size += n
                                if size >= max_bytes:
                                    self.leftover = events[i:]
                                    break
                            continue
                if meas:
                    for k, v in meas.items():
                        if type(v) is int and 0 <= v <= _I64_MAX:
                            pre = mkeys.get(k)
                            if pre is None:
                                pre = self._meas_prefixes(k)
                            vv = small[v] if v < 0x80 else varint(v)
                            body += pre[len(vv)] + vv
                        else:
                            body += self._meas_entry(k, v)
                # timestamp_ns (field 4): its varint is the low 14 bits (two
                # groups, from a table), then the rest, which changes only
                # every 16 µs and is cached.
                if ts >> 28:
                    mid = ts >> 14
                    if mid != ts_mid:
                        ts_mid = mid
                        hi = ts >> 28
                        if hi != ts_hi:
                            ts_hi = hi
                            ts_hi_b = varint(hi)
                        ts_tail = bytes(((mid & 0x7F) | 0x80, ((mid >> 7) & 0x7F) | 0x80)) + ts_hi_b
                    body += ts_lo[ts & 0x3FFF] + ts_tail
                else:
                    body += b"\x20" + varint(ts)
            except Exception:  # noqa: BLE001 - anything unencodable is counted
                errors += 1
                continue
            n = len(body)
            if n < 0x80:
                append(hdr[n])
            elif n < 0x4000:
                append(bytes((0x0A, (n & 0x7F) | 0x80, n >> 7)))
            elif n > max_event:
                errors += 1
                continue
            else:
                append(b"\x0a" + varint(n))
            append(body)
            if max_bytes:
                size += n
                if size >= max_bytes:
                    self.leftover = events[i:]
                    break
        self._ts_hi = ts_hi
        self._ts_hi_bytes = ts_hi_b
        self._ts_mid = ts_mid
        self._ts_tail = ts_tail
        return errors

    def batch(self, events, drops, logs, policy_version: int, worker_id: str, seq: int,
              max_bytes: int = 0, pending=0):
        """Return (bytes, encode_errors).

        With ``max_bytes``, events stop being added once the batch holds that
        many bytes; the events not encoded are left in ``self.leftover``.
        ``pending`` (TelemetryBatch.pending) is an int, or a callable given
        the number of events left over and returning the events still unsent.
        """
        out: list = []
        self.leftover = []
        errors = self._events(events, out, max_bytes)
        dcounts = drops(errors) if callable(drops) else drops
        dbody = b"".join(
            _SMALL[(i + 1) << 3] + varint(n) for i, n in enumerate(dcounts) if n
        )
        out.append(_ld(0x12, dbody))
        for ts, level, logger, message, cid, trace_id, span_id in logs:
            lb = b"\x08" + varint(ts) + string_field(0x12, level) + string_field(
                0x1A, logger
            ) + string_field(0x22, message)
            if cid:
                lb += string_field(0x2A, cid)
            if trace_id:
                lb += string_field(0x32, trace_id)
            if span_id:
                lb += b"\x38" + varint(span_id)
            out.append(_ld(0x1A, lb))
        if policy_version:
            out.append(b"\x20" + varint(policy_version))
        if worker_id:
            out.append(string_field(0x2A, worker_id))
        if seq:
            out.append(b"\x30" + varint(seq))
        unsent = pending(len(self.leftover)) if callable(pending) else pending
        if unsent:
            out.append(b"\x40" + varint(unsent))
        return b"".join(out), errors
