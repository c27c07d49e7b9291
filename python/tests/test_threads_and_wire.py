"""Emits from many threads with exact drop accounting; the hand encoder vs protobuf."""

from __future__ import annotations

import logging
import threading
import time

from conftest import batch_events

from snakepit_bridge import telemetry as t
from snakepit_bridge._wire import BatchEncoder, varint
from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.telemetry import _worker_api as tw


def test_many_threads_no_drain_exact_accounting():
    tw.set_buffer_capacity(5_000)
    n_threads, per = 8, 2_000
    barrier = threading.Barrier(n_threads)

    def work():
        barrier.wait()
        for i in range(per):
            t.emit("tool.execution.stop", {"i": i})

    ths = [threading.Thread(target=work) for _ in range(n_threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(timeout=30)
    delivered = len(tw.drain(10**9))
    drops = tw.drop_counts_dict()
    assert delivered + drops["buffer_full"] == n_threads * per
    assert delivered >= 5_000 and drops["buffer_full"] > 0


def test_many_threads_with_background_drain_and_encoding():
    tw.set_buffer_capacity(2_000)
    n_threads, per = 6, 5_000
    stop = threading.Event()
    delivered = [0]
    enc = BatchEncoder()

    def drainer():
        while True:
            evs = tw.drain(1000)
            if evs:
                data, errs = enc.batch(evs, lambda e: tw.drop_counts(), [], 1, "w", 1)
                assert errs == 0
                delivered[0] += len(batch_events(data))
            elif stop.is_set():
                return
            else:
                time.sleep(0.0005)

    d = threading.Thread(target=drainer)
    d.start()

    def work(k):
        tok = t.set_correlation_id(f"thread-{k}")
        for i in range(per):
            t.emit("call.start", {"i": i}, {"thread": k})
        t.reset_correlation_id(tok)

    ths = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(timeout=60)
    stop.set()
    d.join(timeout=30)
    drops = tw.drop_counts_dict()
    assert delivered[0] + drops["buffer_full"] == n_threads * per
    assert sum(v for k, v in drops.items() if k != "buffer_full") == 0


def test_encoder_matches_protobuf():
    tok = t.set_correlation_id("abc-123")
    with t.span("outer", {"model": "m"}):
        t.emit("tool.execution.stop",
               {"duration": 1234, "neg": -5, "f": 1.5, "flag": True, "s": "str",
                "big": (1 << 63) - 1},
               {"tool": "predict", "n": 3})
    t.reset_correlation_id(tok)
    t.emit("plain", None, None)
    evs = tw.drain()
    logs = [(123, "info", "lg", "hello ü", "cid", "0af7651916cd43dd8448eb211c80319c",
             (1 << 64) - 1), (456, "error", "lg", "x", "", "", 0)]
    data, errs = BatchEncoder().batch(evs, (1, 2, 3, 4, 5, 6), logs, 7, "w1", 9)
    assert errs == 0
    b = pb.TelemetryBatch.FromString(data)
    assert b.policy_version == 7 and b.worker_id == "w1" and b.seq == 9
    d = b.drops
    assert (d.buffer_full, d.sampled_out, d.filtered, d.disabled, d.encode_error,
            d.logs_dropped) == (1, 2, 3, 4, 5, 6)
    assert [list(e.event_parts) for e in b.events] == [
        ["outer", "start"], ["tool", "execution", "stop"], ["outer", "stop"], ["plain"]]
    start, ev, stop, plain = b.events
    assert start.span_name == "outer" and stop.span_name == "outer" and ev.span_name == ""
    assert ev.span_id == start.span_id != 0 and ev.trace_id == start.trace_id
    m = ev.measurements
    assert m["duration"].int_value == 1234 and m["neg"].int_value == -5
    assert m["f"].float_value == 1.5 and m["flag"].int_value == 1
    assert m["s"].string_value == "str" and m["big"].int_value == (1 << 63) - 1
    assert dict(ev.metadata) == {"tool": "predict", "n": "3"}
    assert ev.correlation_id == "abc-123" and plain.correlation_id == ""
    assert ev.timestamp_ns == evs[1][0]
    assert [(lg.timestamp_ns, lg.level, lg.logger, lg.message, lg.correlation_id,
             lg.trace_id, lg.span_id) for lg in b.logs] == logs


def test_log_records_keep_the_span_and_correlation_they_were_logged_in():
    from snakepit_bridge.logs import TelemetryLogHandler

    h = TelemetryLogHandler(10)
    lg = logging.getLogger("snakepit.test.logctx")
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    try:
        lg.info("outside")
        tok = t.set_correlation_id("corr-log")
        with t.span("outer") as outer:
            lg.info("in outer")
            with t.span("inner") as inner:
                lg.warning("in inner")
        t.reset_correlation_id(tok)
    finally:
        lg.removeHandler(h)
    got = [(r[3], r[4], r[5], r[6]) for r in h.drain()]
    assert got == [
        ("outside", "", "", 0),
        ("in outer", "corr-log", outer.trace_id, outer.span_id),
        ("in inner", "corr-log", inner.trace_id, inner.span_id),
    ]
    assert inner.trace_id == outer.trace_id and inner.span_id != outer.span_id


def test_encoder_counts_unencodable_events():
    t.emit("ok", {"a": 1})
    t.emit("bad", {"a": object()})
    t.emit("toobig", {"a": 1 << 64})
    data, errs = BatchEncoder().batch(tw.drain(), lambda e: (0, 0, 0, 0, e, 0), [], 0, "", 0)
    assert errs == 2
    b = pb.TelemetryBatch.FromString(data)
    assert [list(e.event_parts) for e in b.events] == [["ok"]]
    assert b.drops.encode_error == 2


def test_varint_and_timestamps():
    for v in [1, 127, 128, 300, 2**28, 2**35 + 5, 2**63, 2**64 - 1]:
        e = pb.TelemetryEvent(span_id=v).SerializeToString()
        assert e == b"\x30" + varint(v)
    enc = BatchEncoder()
    for ts in [1, 2**28 - 1, 2**28, 1_700_000_000_123_456_789, 2**63 - 1]:
        body = enc.event_body((ts, "a", None, None, None, None, False))
        assert pb.TelemetryEvent.FromString(body).timestamp_ns == ts


def test_event_lengths_across_varint_sizes():
    # The event's length prefix takes 1, 2 or 3 bytes.
    enc = BatchEncoder()
    for n in (10, 100, 127, 128, 150, 16_000, 16_384, 20_000, 100_000):
        data, errs = enc.batch([(1_700_000_000_000_000_000, "a.b", {"x": 1}, {"k": "v" * n},
                                 "cid", None, False)], (0,) * 6, [], 0, "", 0)
        assert errs == 0
        ev = pb.TelemetryBatch.FromString(data).events[0]
        assert ev.metadata["k"] == "v" * n and ev.correlation_id == "cid"


def test_events_of_one_shape_travel_as_runs_in_emit_order():
    meta = {"tool": "burst"}
    other = {"tool": "other"}
    base = 1_700_000_000_000_000_000
    evs = [(base + i, "burst", {"duration": v}, meta, "cid", None, False)
           for i, v in enumerate([5, -7, (1 << 63) - 1, -(1 << 63), 0])]
    evs.append((base + 10, "single", {"duration": 1}, other, None, None, False))
    # Not a run: two measurements, a float, a different metadata dict.
    evs.append((base + 11, "burst", {"duration": 1, "n": 2}, meta, "cid", None, False))
    evs.append((base + 12, "burst", {"duration": 1.5}, meta, "cid", None, False))
    evs.append((base + 13, "burst", {"duration": 3}, dict(meta), "cid", None, False))
    evs += [(base + 20 + i, "burst", {"duration": i}, meta, "cid", None, False)
            for i in range(3)]
    data, errs = BatchEncoder().batch(evs, (0,) * 6, [], 0, "", 0)
    assert errs == 0
    b = pb.TelemetryBatch.FromString(data)
    assert [len(r.timestamps) for r in b.runs] == [5, 3]
    assert len(b.events) == 4
    got = batch_events(data)
    assert [(e.timestamp_ns, e.correlation_id, dict(e.metadata)) for e in got] == [
        (ev[0], ev[4] or "", {k: str(v) for k, v in ev[3].items()}) for ev in evs]
    for e, ev in zip(got, evs, strict=True):
        want = {k: (v if isinstance(v, float) else int(v)) for k, v in ev[2].items()}
        assert {k: getattr(m, m.WhichOneof("value")) for k, m in e.measurements.items()} == want
    # A run costs 16 bytes per event after the first.
    long_run = [(base + i, "burst", {"duration": i * 1000}, meta, "cid", None, False)
                for i in range(1000)]
    data, _ = BatchEncoder().batch(long_run, (0,) * 6, [], 0, "", 0)
    assert len(data) < 1000 * 16 + 200
    # The legacy one-event-per-message path never makes runs.
    bodies, errs = BatchEncoder().event_bodies(long_run[:3])
    assert errs == 0 and len(bodies) == 3
    assert [pb.TelemetryEvent.FromString(x).timestamp_ns for x in bodies] == [
        base, base + 1, base + 2]


def test_a_batch_says_how_many_events_are_still_unsent():
    for i in range(5):
        t.emit("tool.execution.stop", {"duration": i}, {"i": str(i)})
    enc = BatchEncoder()
    evs = tw.drain(3)
    # Two events stay in the buffer; one drained event does not fit the batch.
    data, _ = enc.batch(evs, (0,) * 6, [], 0, "", 0, max_bytes=1, pending=t.pending)
    b = pb.TelemetryBatch.FromString(data)
    assert len(b.events) + len(enc.leftover) == 3
    assert b.pending == 2 + len(enc.leftover)
    tw.drain()
    data, _ = enc.batch([], (0,) * 6, [], 0, "", 0, pending=t.pending)
    assert pb.TelemetryBatch.FromString(data).pending == 0
