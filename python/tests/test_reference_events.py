"""The reference system's event names (``python.call.stop``) and the
worker's own events: gc.completed, error.occurred, tool.result_size."""

from __future__ import annotations

import gc

from snakepit_bridge import telemetry
from snakepit_bridge.telemetry import _worker_api as tw
from snakepit_bridge.worker import own_events


def drained():
    return [tw.event_to_dict(e) for e in tw.drain(10**6)]


def test_the_reference_spelling_is_decided_as_the_event_it_names():
    p = tw.Policy(deny=["python.call.*"], pattern_rates=[("python.tool.*", 0.0)])
    assert p.decide("python.call.stop") == p.decide("call.stop") < 0
    assert p.decide("python.tool.execution.start") == p.decide("tool.execution.start") < 0
    assert p.decide("python.memory.sampled") == p.decide("memory.sampled") == 0
    tw.set_policy(p)
    telemetry.emit("python.call.stop", {"duration": 5, "count": 1}, {"command": "predict"})
    telemetry.emit("python.memory.sampled", {"rss_bytes": 1})
    assert [e["name"] for e in drained()] == ["python.memory.sampled"]
    assert tw.drop_counts_dict()["filtered"] == 1


def test_reference_call_events_keep_their_count():
    telemetry.emit("python.call.stop", {"duration": 1234, "count": 1}, {"command": "predict"},
                   correlation_id="abc-123")
    (ev,) = drained()
    assert ev["name"] == "python.call.stop"
    assert ev["measurements"] == {"duration": 1234, "count": 1}
    assert ev["correlation_id"] == "abc-123"


def test_result_size_counts_json_and_binary_results():
    own_events.result_size("predict", b'{"a":1}', {"blob": b"x" * 10})
    own_events.result_size("small", b"null", {})
    evs = drained()
    assert [(e["name"], e["measurements"], e["metadata"]) for e in evs] == [
        ("tool.result_size", {"message_size": 17}, {"tool": "predict"}),
        ("tool.result_size", {"message_size": 4}, {"tool": "small"}),
    ]


def test_error_occurred_carries_the_error_and_the_call_context():
    token = telemetry.set_correlation_id("cid-err")
    try:
        with telemetry.span("tool.execution"):
            own_events.error_occurred("predict", ValueError("x" * 5000))
            sp = telemetry.current_span()
    finally:
        telemetry.reset_correlation_id(token)
    ev = [e for e in drained() if e["name"] == "error.occurred"][0]
    assert ev["measurements"] == {"count": 1}
    assert ev["metadata"]["tool"] == "predict"
    assert ev["metadata"]["error_type"] == "ValueError"
    assert len(ev["metadata"]["error_message"]) == own_events.MAX_ERROR_MESSAGE
    assert ev["correlation_id"] == "cid-err"
    assert ev["span_id"] == sp["span_id"]


def test_a_dropped_event_is_counted_and_nothing_is_built():
    tw.set_policy(tw.Policy(deny=["python.tool.result_size", "python.error.*"]))
    # First emit decides (and caches) the name; after that the gate alone drops.
    for _ in range(3):
        own_events.result_size("t", b"1", {})
        own_events.error_occurred("t", KeyError("k"))
    assert drained() == []
    assert tw.drop_counts_dict()["filtered"] == 6
    tw.set_policy(tw.Policy(enabled=False))
    own_events.result_size("t", b"1", {})
    own_events.result_size("t", b"1", {})
    assert tw.drop_counts_dict()["disabled"] == 2


class _Cycle:
    def __init__(self):
        self.me = self


def test_gc_completed_after_a_collection_outside_any_call():
    own_events.install_gc_events()
    own_events.install_gc_events()  # idempotent
    token = telemetry.set_correlation_id("cid-call")
    try:
        with telemetry.span("tool.execution"):
            for _ in range(100):
                _Cycle()
            gc.collect()
    finally:
        telemetry.reset_correlation_id(token)
        own_events.remove_gc_events()
    gcs = [e for e in drained() if e["name"] == "gc.completed"]
    assert len(gcs) == 1, gcs
    ev = gcs[0]
    m = ev["measurements"]
    assert m["count"] == 1 and m["generation"] == 2
    assert m["collected"] >= 100
    assert m["uncollectable"] == 0
    assert m["duration"] > 0
    assert ev["correlation_id"] == "" and ev["span_id"] == 0, "not attributed to the call"
    gc.collect()
    assert [e for e in drained() if e["name"] == "gc.completed"] == [], "removed"


def test_gc_completed_when_disabled_costs_a_lookup_and_counts_the_drop():
    tw.set_policy(tw.Policy(deny=["python.gc.*"]))
    own_events.install_gc_events()
    try:
        gc.collect()
        gc.collect()
    finally:
        own_events.remove_gc_events()
    assert drained() == []
    assert tw.drop_counts_dict()["filtered"] == 2
