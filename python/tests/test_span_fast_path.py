"""Spans whose events the policy drops (telemetry disabled, or the span's
names filtered out): they record nothing, count their drops, and keep the
API's semantics (correlation id, decorator, span_id, runtime changes)."""

from __future__ import annotations

import pytest

from snakepit_bridge import telemetry
from snakepit_bridge.telemetry import _testing
from snakepit_bridge.telemetry import _worker_api as tw


def drained():
    return [tw.event_to_dict(e) for e in tw.drain(10**6)]


def names(evs):
    return [e["name"] for e in evs]


def disable():
    tw.set_policy(tw.Policy(enabled=False))


def test_a_disabled_span_records_nothing_and_counts_both_events_as_disabled():
    disable()
    with telemetry.span("inference", {"model": "m"}) as s:
        pass
    with pytest.raises(ValueError):
        with telemetry.span("inference"):
            raise ValueError("boom")
    assert drained() == []
    assert s.span_id == 0 and s.trace_id == ""
    counts = tw.drop_counts_dict()
    assert counts["disabled"] == 4
    assert counts["filtered"] == counts["sampled_out"] == 0


def test_a_disabled_span_is_not_current_and_keeps_the_correlation_id_of_an_enabled_one():
    tokens = tw.enter_call_context("ambient", None)
    try:
        call_span = telemetry.current_span()
        with telemetry.span("on", None, "abc-123"):
            on_cid = telemetry.get_correlation_id()
            on_parent = telemetry.current_span()["parent_span_id"]
        disable()
        with telemetry.span("off", None, "abc-123"):
            off_cid = telemetry.get_correlation_id()
            off_span = telemetry.current_span()
    finally:
        tw.exit_call_context(tokens)
    assert on_cid == off_cid == "ambient"
    assert on_parent == call_span["span_id"]
    # What runs inside a span that records nothing sees the enclosing span.
    assert off_span == call_span


def test_a_filtered_span_emits_nothing_and_what_runs_inside_keeps_the_enclosing_parent():
    tw.set_policy(tw.Policy(deny=["python.preprocess.*"]))
    tokens = tw.enter_call_context("cid-1", None)
    try:
        call_id = telemetry.current_span()["span_id"]
        with telemetry.span("preprocess"):
            telemetry.emit("custom.inside", {"n": 1})
            with telemetry.span("inner"):
                pass
    finally:
        tw.exit_call_context(tokens)
    evs = drained()
    assert names(evs) == ["custom.inside", "inner.start", "inner.stop"]
    # No event points at a span that was never recorded.
    assert {e["parent_span_id"] for e in evs if e["name"] != "custom.inside"} == {call_id}
    assert tw.drop_counts_dict()["filtered"] == 2


def test_a_span_partly_filtered_still_records_what_the_policy_keeps():
    tw.set_policy(tw.Policy(deny=["python.step.stop"]))
    with telemetry.span("step"):
        pass
    with pytest.raises(KeyError):
        with telemetry.span("step"):
            raise KeyError("k")
    assert names(drained()) == ["step.start", "step.start", "step.exception"]
    assert tw.drop_counts_dict()["filtered"] == 1


def test_a_policy_change_takes_effect_at_the_next_span():
    with telemetry.span("a"):
        disable()
    with telemetry.span("a"):
        pass
    # Entered before the change: recorded whole as far as the policy keeps it.
    assert names(drained()) == ["a.start"]
    assert tw.drop_counts_dict()["disabled"] == 3
    tw.set_policy(tw.Policy())
    with telemetry.span("a"):
        pass
    assert names(drained()) == ["a.start", "a.stop"]
    tw.set_policy(tw.Policy(allow=["python.b.*"]))
    with telemetry.span("a"):
        pass
    with telemetry.span("b"):
        pass
    assert names(drained()) == ["b.start", "b.stop"]


def test_a_span_decorated_while_disabled_records_once_enabled_with_its_arguments():
    disable()

    @telemetry.span("load", {"model": "m1"}, "cid-load")
    def load(x):
        return x * 2

    @telemetry.span("plain")
    def plain():
        return "p"

    assert load.__name__ == "load"
    assert (load(2), plain()) == (4, "p")
    assert drained() == []
    assert tw.drop_counts_dict()["disabled"] == 4
    tw.set_policy(tw.Policy())
    assert (load(3), plain()) == (6, "p")
    evs = drained()
    assert names(evs) == ["load.start", "load.stop", "plain.start", "plain.stop"]
    assert evs[0]["metadata"]["model"] == "m1"
    assert {e["correlation_id"] for e in evs[:2]} == {"cid-load"}


def test_a_decorated_generator_of_a_dropped_span_yields_everything_and_is_never_current():
    tokens = tw.enter_call_context("cid-g", None)
    try:
        call_span = telemetry.current_span()

        @telemetry.span("gen")
        def gen():
            for i in range(3):
                yield i, telemetry.current_span()

        disable()
        got = list(gen())
    finally:
        tw.exit_call_context(tokens)
    assert [i for i, _ in got] == [0, 1, 2]
    assert all(cur == call_span for _, cur in got)
    assert drained() == []
    assert tw.drop_counts_dict()["disabled"] == 2


def test_a_dropped_span_counts_into_counters_installed_afterwards():
    disable()
    with telemetry.span("x"):
        pass
    _testing.set_drop_count("disabled", 100)
    with telemetry.span("x"):
        pass
    assert tw.drop_counts_dict()["disabled"] == 102



def test_a_dropped_span_counts_each_event_under_its_own_reason():
    # start and exception sampled out (rate 0), stop filtered out.
    tw.set_policy(tw.Policy(pattern_rates=[("python.mix.*", 0.0)], deny=["python.mix.stop"]))
    with telemetry.span("mix"):
        inside = tw.drop_counts_dict()
    with pytest.raises(RuntimeError):
        with telemetry.span("mix", {"k": "v"}):
            raise RuntimeError("x")
    assert drained() == []
    assert (inside["sampled_out"], inside["filtered"]) == (1, 0)
    counts = tw.drop_counts_dict()
    assert (counts["sampled_out"], counts["filtered"]) == (3, 1)


def test_a_span_dropped_for_one_reason_counts_both_events_when_entered():
    tw.set_policy(tw.Policy(deny=["python.whole.*"]))
    with telemetry.span("whole", {"k": "v"}):
        inside = tw.drop_counts_dict()["filtered"]
    assert inside == 2
    assert tw.drop_counts_dict()["filtered"] == 2


FALLBACK_SCRIPT = """
import sys
sys.modules["snakepit_bridge._native"] = None  # as if installed without it
from snakepit_bridge import telemetry
from snakepit_bridge.telemetry import _dropped
from snakepit_bridge.telemetry import _worker_api as tw
assert _dropped._NativeDroppedBase is None
tw.set_policy(tw.Policy(enabled=False))
with telemetry.span("a") as s:
    inside = telemetry.current_span()
with telemetry.span("a", {"k": "v"}) as s2:
    pass
try:
    with telemetry.span("a"):
        raise KeyError("k")
except KeyError:
    pass
print(tw.drop_counts_dict()["disabled"], s.span_id, s2.span_id, inside, len(tw.drain(10)))
"""


def test_without_the_native_module_a_dropped_span_behaves_the_same():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.split() == ["6", "0", "0", "None", "0"]


def test_with_the_native_module_a_dropped_span_enters_and_exits_in_c():
    native = pytest.importorskip("snakepit_bridge._native")
    if not hasattr(native, "DroppedSpanBase"):
        pytest.fail("snakepit_bridge._native is older than this package: rerun `cargo xtask setup`")
    disable()
    s = telemetry.span("c")
    assert isinstance(s, native.DroppedSpanBase)
    with s as entered:
        assert entered is s
    assert tw.drop_counts_dict()["disabled"] == 2
