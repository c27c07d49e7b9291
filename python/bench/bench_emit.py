#!/usr/bin/env python3
"""Benchmark the cost of telemetry.emit and telemetry.span on the calling thread.

Prints ns/event for: same-run baselines (bare function call with the same
arguments; deque.append of a tuple; an empty ``with`` of a trivial context
manager class), emit enabled with the buffer drained in the background (by a
thread that also encodes batches, as the worker does), span enter+exit (a
root span, and a child of a call's span as in a tool), a span whose events
the policy filters out, and emit and span with telemetry disabled; plus
ratios to the bare call. ``TARGETS`` holds the targets.

    .venv/bin/python python/bench/bench_emit.py [--n 200000] [--json]
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snakepit_bridge import telemetry  # noqa: E402
from snakepit_bridge._wire import BatchEncoder  # noqa: E402
from snakepit_bridge.telemetry import _dropped, _testing  # noqa: E402
from snakepit_bridge.telemetry import _worker_api as tw


class Drainer(threading.Thread):
    """Drains and encodes batches in the background, like the telemetry stream."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.delivered = 0
        self.enc = BatchEncoder()

    def run(self) -> None:
        while not self.stop.is_set():
            evs = tw.drain(1000)
            if evs:
                self.enc.batch(evs, tw.drop_counts(), [], 0, "bench", 1)
                self.delivered += len(evs)
            else:
                time.sleep(0.001)
        evs = tw.drain(10**9)
        self.delivered += len(evs)


CHUNK = 2_000
# Targets (ns per op) of the figures that have one.
TARGETS = {
    "emit_enabled_ns": 300,
    "span_enabled_ns": 600,
    "span_disabled_ns": 150,
    "span_filtered_ns": 150,
}


def timeit(fn, n: int, repeat: int = 5, between=None) -> float:
    """ns per op: the fastest chunk of CHUNK ops over ``repeat`` runs of n
    ops (the shared machine's load shows as slow chunks, not as a slower
    figure); ``between()`` (untimed) runs after each chunk, e.g. to drain
    the buffer."""
    best = float("inf")
    for _ in range(repeat):
        done = 0
        while done < n:
            k = min(CHUNK, n - done)
            t0 = time.perf_counter_ns()
            fn(k)
            best = min(best, (time.perf_counter_ns() - t0) / k)
            done += k
            if between:
                between()
    return best


def _drain_all() -> None:
    tw.drain(10**9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-drain", action="store_true",
                    help="do not drain in the background (large buffer instead)")
    args = ap.parse_args()
    n = args.n
    meas = {"duration": 1234}
    meta = {"tool": "predict"}

    def bare(n):
        def f(name, m, md=None, correlation_id=None):
            return None
        for _ in range(n):
            f("tool.execution.stop", meas, meta)

    dq = collections.deque()
    app = dq.append

    def append(n):
        tn = time.time_ns
        for _ in range(n):
            app((tn(), "tool.execution.stop", meas, meta, None, None, False))
        dq.clear()

    emit = telemetry.emit
    span = telemetry.span

    def emit_loop(n):
        for _ in range(n):
            emit("tool.execution.stop", meas, meta)

    def emit_cid_loop(n):
        for _ in range(n):
            emit("tool.execution.stop", meas, meta, correlation_id="abc-123")

    def span_loop(n):
        for _ in range(n):
            with span("inference"):
                pass

    def span_md_loop(n):
        for _ in range(n):
            with span("inference", meta):
                pass

    class Trivial:
        """The cheapest context manager a Python class gives."""

        __slots__ = ()

        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc, tb):
            return False

    def with_loop(n):
        cm = Trivial()
        for _ in range(n):
            with cm:
                pass

    def span_in_call_loop(n):
        # As in a tool: a child of the call's span.
        tokens = tw.enter_call_context("abc-123", None)
        try:
            span_loop(n)
        finally:
            tw.exit_call_context(tokens)

    results = {}
    results["baseline_call_ns"] = timeit(bare, n)
    results["baseline_deque_append_ns"] = timeit(append, n, between=dq.clear)
    results["baseline_with_ns"] = timeit(with_loop, n)

    # 1. Enabled, buffer never full: drained (untimed) between chunks.
    _testing.reset(capacity=10 * CHUNK)
    results["emit_enabled_ns"] = timeit(emit_loop, n, between=_drain_all)
    results["emit_enabled_with_cid_ns"] = timeit(emit_cid_loop, n, between=_drain_all)
    results["span_enabled_ns"] = timeit(span_loop, n // 4, between=_drain_all)
    results["span_enabled_in_call_ns"] = timeit(span_in_call_loop, n // 4, between=_drain_all)
    # Filtered: the policy denies the span's events (the others are kept).
    tw.set_policy(tw.Policy(deny=["python.inference.*"]))
    results["span_filtered_ns"] = timeit(span_loop, n)
    results["span_filtered_with_metadata_ns"] = timeit(span_md_loop, n)
    tw.set_policy(tw.Policy())
    tw.set_policy(tw.Policy(sampling_rate=0.5))
    results["emit_sampled_50pct_with_cid_ns"] = timeit(emit_cid_loop, n, between=_drain_all)
    tw.set_policy(tw.Policy())
    drops_clean = tw.drop_counts_dict()

    # 2. Enabled, a background thread draining and encoding (as the worker does);
    #    the buffer may overflow: those emits are counted as buffer_full drops.
    _testing.reset(capacity=10_000)
    drainer = None if args.no_drain else Drainer()
    if drainer:
        drainer.start()
    t0 = time.perf_counter_ns()
    emit_loop(n)
    results["emit_enabled_bg_drain_ns"] = (time.perf_counter_ns() - t0) / n
    if drainer:
        drainer.stop.set()
        drainer.join()
    drops = tw.drop_counts_dict()
    results["bg_drain_delivered"] = drainer.delivered if drainer else 0
    tw.drain(10**9)

    # 3. Disabled.
    tw.set_policy(tw.Policy(enabled=False))
    results["emit_disabled_ns"] = timeit(emit_loop, n)
    results["span_disabled_ns"] = timeit(span_loop, n)
    results["span_disabled_with_metadata_ns"] = timeit(span_md_loop, n)
    _testing.reset()
    gc.collect()

    # The baselines again, at the end: the lower figure of the two, so a
    # busy moment of the shared machine does not shrink every ratio.
    results["baseline_call_ns"] = min(results["baseline_call_ns"], timeit(bare, n))
    results["baseline_with_ns"] = min(results["baseline_with_ns"], timeit(with_loop, n))
    base = results["baseline_call_ns"]
    results["ratio_emit_enabled_vs_call"] = results["emit_enabled_ns"] / base
    results["ratio_emit_disabled_vs_call"] = results["emit_disabled_ns"] / base
    results["ratio_span_enabled_vs_call"] = results["span_enabled_ns"] / base
    results["ratio_span_disabled_vs_call"] = results["span_disabled_ns"] / base
    results["ratio_span_filtered_vs_call"] = results["span_filtered_ns"] / base
    # Whether a dropped span entered and exited in C (the native module).
    results["dropped_span_native"] = _dropped._NativeDroppedBase is not None
    results["drops_clean_runs"] = drops_clean
    results["drops_bg_drain_run"] = drops
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'figure':38} {'ns/op':>10}")
    for k, v in results.items():
        if isinstance(v, float) and k.endswith("_ns"):
            print(f"{k:38} {v:10.1f}")
    for k, v in results.items():
        if k.startswith("ratio"):
            print(f"{k:38} {v:10.2f}x")
    print(f"background drain run: delivered {results['bg_drain_delivered']} of {n}, "
          f"drops {drops}")
    print(f"drops in the drained-between-chunks runs: {drops_clean}")
    for what, target in TARGETS.items():
        print(f"target: {what} <= {target} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
