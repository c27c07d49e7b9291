"""Runtime control: policy, legacy parts, malformed controls, sampling rule, buffering."""

from __future__ import annotations

import json
import logging
import random
import re
import zlib
from pathlib import Path

import pytest

from snakepit_bridge import telemetry as t
from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.telemetry import _policy, _testing
from snakepit_bridge.telemetry import _worker_api as tw

VECTORS = Path(__file__).with_name("sampling_vectors.json")


def names():
    return [e[1] for e in tw.drain(10**6)]


def policy_msg(**kw):
    prs = kw.pop("pattern_rates", [])
    msg = pb.TelemetryControl(policy=pb.TelemetryPolicy(**kw))
    for p, r in prs:
        msg.policy.pattern_rates.add(pattern=p, rate=r)
    return msg


def test_default_policy_keeps_everything():
    t.emit("call.start", {"system_time": 1})
    assert names() == ["call.start"]


def test_policy_disable_and_enable_counts_disabled():
    assert tw.apply_control(policy_msg(enabled=False, sampling_rate=1.0, version=3))
    assert tw.policy().version == 3
    for _ in range(5):
        t.emit("call.start", {})
    with t.span("s"):
        pass
    assert names() == []
    assert tw.drop_counts_dict()["disabled"] == 7
    assert tw.apply_control(pb.TelemetryControl(toggle=pb.TelemetryToggle(enabled=True)))
    t.emit("call.start", {})
    assert names() == ["call.start"]


def test_filter_allow_deny():
    assert tw.apply_control(policy_msg(enabled=True, sampling_rate=1.0,
                                      allow=["python.call.*", "python.tool.*"],
                                      deny=["python.tool.execution.exception"]))
    for n in ["call.start", "tool.execution.stop", "tool.execution.exception",
              "memory.sampled"]:
        t.emit(n, {})
    assert names() == ["call.start", "tool.execution.stop"]
    assert tw.drop_counts_dict()["filtered"] == 2
    # legacy filter part replaces both lists
    assert tw.apply_control(pb.TelemetryControl(
        filter=pb.TelemetryEventFilter(allow=[], deny=["python.memory.*"])))
    t.emit("memory.sampled", {})
    t.emit("cpu.sampled", {})
    assert names() == ["cpu.sampled"]


def test_full_name_patterns_and_globs():
    assert _policy.pattern_matches("python.*", "call.start")
    assert _policy.pattern_matches("snakepit.python.call.*", "call.start")
    assert not _policy.pattern_matches("call.*", "call.start")  # relative to snakepit.
    assert _policy.pattern_matches("python.call.st?rt", "call.start")
    assert not _policy.pattern_matches("python.call.st?rt", "call.staart")
    assert _policy.pattern_matches("*", "a.b.c")
    assert _policy.pattern_matches("python.*.stop", "tool.execution.stop")
    assert not _policy.pattern_matches("python.call.[ab]", "call.a")  # no classes: literal
    assert _policy.pattern_matches("python.call.[ab]", "call.[ab]")


def test_rate_zero_and_pattern_rates_first_match_wins():
    assert tw.apply_control(policy_msg(
        enabled=True, sampling_rate=1.0,
        pattern_rates=[("python.memory.*", 0.0), ("python.*", 1.0), ("python.cpu.*", 0.0)]))
    t.emit("memory.sampled", {})
    t.emit("cpu.sampled", {})
    assert names() == ["cpu.sampled"]
    assert tw.drop_counts_dict()["sampled_out"] == 1


def test_stop_and_exception_use_start_rate():
    p = tw.Policy(pattern_rates=[("python.call.start", 0.0), ("python.call.stop", 1.0)])
    assert p.rate_for("call.stop") == 0.0
    assert p.rate_for("call.exception") == 0.0
    assert p.rate_for("call.start") == 0.0
    assert p.rate_for("other.stop") == 1.0


def test_sampling_keeps_spans_whole_and_follows_correlation_id():
    tw.set_policy(tw.Policy(sampling_rate=0.5))
    kept_cids = set()
    for i in range(400):
        cid = f"req-{i}"
        tok = t.set_correlation_id(cid)
        t.emit("call.start", {})
        t.emit("tool.execution.start", {})
        t.emit("tool.execution.stop", {})
        t.emit("call.stop", {})
        t.reset_correlation_id(tok)
        if _policy.sampling_keep(zlib.crc32(cid.encode()), 0.5):
            kept_cids.add(cid)
    evs = tw.drain(10**6)
    by_cid = {}
    for e in evs:
        by_cid.setdefault(e[4], []).append(e[1])
    assert set(by_cid) == kept_cids
    assert all(len(v) == 4 for v in by_cid.values())
    assert 120 < len(kept_cids) < 280
    assert tw.drop_counts_dict()["sampled_out"] == 4 * (400 - len(kept_cids))
    # spans without correlation id: kept or dropped as a whole
    for _ in range(300):
        with t.span("work"):
            t.emit("inside", {})
    evs = tw.drain(10**6)
    per_span = {}
    for e in evs:
        per_span.setdefault(e[5][0], []).append(e[1])
    assert all(v == ["work.start", "inside", "work.stop"] for v in per_span.values())
    assert 60 < len(per_span) < 240


def test_legacy_sampling_update():
    assert tw.apply_control(pb.TelemetryControl(
        sampling=pb.TelemetrySamplingUpdate(sampling_rate=0.25)))
    assert tw.policy().sampling_rate == 0.25 and tw.policy().pattern_rates == []
    assert tw.apply_control(pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(
        sampling_rate=0.0, event_patterns=["python.memory.*", "python.cpu.*"])))
    assert tw.policy().pattern_rates == [("python.memory.*", 0.0), ("python.cpu.*", 0.0)]
    assert tw.apply_control(pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(
        sampling_rate=1.0, event_patterns=["python.memory.*"])))
    assert tw.policy().pattern_rates == [("python.memory.*", 1.0), ("python.cpu.*", 0.0)]
    assert tw.policy().sampling_rate == 0.25


@pytest.mark.parametrize("bad", [
    pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(sampling_rate=1.5)),
    pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(sampling_rate=-0.1)),
    pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(sampling_rate=float("nan"))),
    pb.TelemetryControl(sampling=pb.TelemetrySamplingUpdate(sampling_rate=0.5,
                                                            event_patterns=[""])),
    pb.TelemetryControl(filter=pb.TelemetryEventFilter(deny=["bad pattern"])),
    pb.TelemetryControl(policy=pb.TelemetryPolicy(enabled=True, sampling_rate=2.0)),
    pb.TelemetryControl(policy=pb.TelemetryPolicy(enabled=True, sampling_rate=1.0,
                                                  log_level="verbose")),
    pb.TelemetryControl(),
])
def test_malformed_control_is_ignored_and_logged(bad, caplog):
    tw.set_policy(tw.Policy(sampling_rate=0.75, version=9))
    with caplog.at_level(logging.WARNING, logger="snakepit_bridge.telemetry"):
        assert tw.apply_control(bad) is False
    assert "ignoring malformed telemetry control" in caplog.text
    assert tw.policy().sampling_rate == 0.75 and tw.policy().version == 9


def test_policy_log_level_listener():
    from snakepit_bridge import logs

    root = logging.getLogger()
    old = root.level
    tw.add_policy_listener(logs._follow_policy)
    try:
        tw.apply_control(policy_msg(enabled=True, sampling_rate=1.0, log_level="error"))
        assert root.level == logging.ERROR
        tw.apply_control(policy_msg(enabled=True, sampling_rate=1.0, log_level="none"))
        assert root.level > logging.CRITICAL
        tw.apply_control(policy_msg(enabled=True, sampling_rate=1.0, log_level="debug"))
        assert root.level == logging.DEBUG
    finally:
        tw.remove_policy_listener(logs._follow_policy)
        root.setLevel(old)


def test_buffering_before_attach_is_bounded_and_counted():
    tw.set_buffer_capacity(100)
    for i in range(150):
        t.emit("call.start", {"i": i})
    assert t.buffered() == 100
    assert tw.drop_counts_dict()["buffer_full"] == 50
    evs = tw.drain(10**6)
    assert [e[2]["i"] for e in evs] == list(range(100))  # the oldest are kept, in order


def test_sampling_rule_edges():
    assert _policy.sampling_threshold(1.0) is None
    assert _policy.sampling_threshold(0.0) == 0
    assert _policy.sampling_threshold(0.5) == 1 << 63
    assert _policy.sampling_keep(0, 0.5) and _policy.sampling_keep(12345, 1.0)
    assert not _policy.sampling_keep(0, 0.0)


def test_sampling_vectors_file_matches_implementation():
    vs = json.loads(VECTORS.read_text())
    assert len(vs) >= 50
    kinds = {v["key_kind"] for v in vs}
    assert kinds == {"correlation_id", "span_id"}
    assert any(v["keep"] for v in vs) and any(not v["keep"] for v in vs)
    for v in vs:
        key = (zlib.crc32(v["key"].encode()) if v["key_kind"] == "correlation_id"
               else v["key"])
        assert v["key_u64"] == key
        assert _policy.sampling_keep(key, v["rate"]) == v["keep"], v
        assert _policy.mix(key) == v["mixed"]
        assert _policy.sampling_threshold(v["rate"]) == v["threshold"]


def test_emit_decision_agrees_with_rule_for_vectors():
    """The hot path (cached decisions) must agree with the reference rule."""
    for v in json.loads(VECTORS.read_text()):
        _testing.reset()
        tw.set_policy(tw.Policy(sampling_rate=v["rate"]))
        if v["key_kind"] == "correlation_id":
            if not v["key"]:
                continue
            t.emit("x.start", {}, correlation_id=v["key"])
        else:
            ctx = (v["key"], 0, "0" * 31 + "1", "x", None)
            tw.emit_span_event("x.start", {}, None, None, ctx)
        assert (t.buffered() == 1) == v["keep"], v


_TRACEPARENT_RULE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _traceparent_by_the_rule(tp):
    """W3C traceparent, the rule written out: stripped, either case, version
    ff and all-zero ids invalid."""
    m = _TRACEPARENT_RULE.fullmatch(tp.strip().lower()) if tp else None
    if not m or m.group(1) == "ff" or m.group(2) == "0" * 32 or m.group(3) == "0" * 16:
        return None
    return m.group(2), int(m.group(3), 16)


def test_traceparent_parser_follows_the_rule_on_damaged_input():
    assert tw.parse_traceparent("00-" + "ab" * 16 + "-" + "cd" * 8 + "-01") == (
        "ab" * 16, 0xCDCDCDCDCDCDCDCD)
    rng = random.Random(7)
    # Characters int() or bytes.fromhex would take where the rule does not.
    alphabet = "0123456789abcdefABCDEF-_+ x\n\t\x0b\u0663\u0130g"
    valid = 0
    for _ in range(40_000):
        version = rng.choice([0, 1, 255, rng.getrandbits(8)])
        trace = rng.choice([0, rng.getrandbits(128)])
        span = rng.choice([0, rng.getrandbits(64)])
        s = list(f"{version:02x}-{trace:032x}-{span:016x}-{rng.getrandbits(8):02x}")
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            k = rng.randrange(len(s) + 1)
            op = rng.random()
            if op < 0.4 and k < len(s):
                s[k] = rng.choice(alphabet)
            elif op < 0.7:
                s.insert(k, rng.choice(alphabet))
            elif k < len(s):
                del s[k]
        tp = "".join(s)
        if rng.random() < 0.2:
            tp = tp.upper()
        if rng.random() < 0.1:
            tp = " " + tp + "\n"
        expected = _traceparent_by_the_rule(tp)
        assert tw.parse_traceparent(tp) == expected, tp
        valid += expected is not None
    # Both outcomes are well represented.
    assert 3_000 < valid < 35_000, valid
    for bad in (None, "", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                "ff-" + "1" * 32 + "-" + "1" * 16 + "-01",
                "00-0x" + "1" * 30 + "-" + "1" * 16 + "-01",
                "00-" + "1" * 31 + "_-" + "1" * 16 + "-01"):
        assert tw.parse_traceparent(bad) is None, bad


def test_current_traceparent_carries_the_callers_trace_flags():
    trace = "0af7651916cd43dd8448eb211c80319c"
    for incoming, flags in (
        (f"00-{trace}-b7ad6b7169203331-00", "00"),
        (f" 00-{trace.upper()}-B7AD6B7169203331-0B\n", "0b"),
        (f"00-{trace}-b7ad6b7169203331-01", "01"),
        ("not a traceparent", "01"),
        (None, "01"),
    ):
        tokens = tw.enter_call_context("cid", incoming)
        try:
            with t.span("inner"):
                tp = t.current_traceparent()
                assert tp.endswith(f"-{flags}"), (incoming, tp)
                assert tp.split("-")[2] == f"{t.current_span()['span_id']:016x}"
        finally:
            tw.exit_call_context(tokens)
