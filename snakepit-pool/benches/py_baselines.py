"""Python baselines for the pool benchmark: the same trivial call through
concurrent.futures.ProcessPoolExecutor and multiprocessing.Pool, 2 workers.

Prints one JSON object: calls/s with many calls in flight (one submit /
apply_async per call, no batching).

``py_baselines.py serve-p50``: starts a multiprocessing.Pool(2), prints
``ready``, then for each line N read from stdin prints the p50 of N
``apply`` calls (µs), until stdin closes. The pool benchmark alternates
these blocks with its own, so that both are measured in the same minutes.
``py_baselines.py serve-latency``: the same, each block printing ``p50 p99``.
"""
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait

WORKERS = 2


def trivial(x):
    return x


def samples_ns(call, n):
    """The duration of each of ``n`` calls of ``call``, ns."""
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        call(i)
        samples.append(time.perf_counter_ns() - t0)
    return samples


def p50_us(call, n):
    return statistics.median(samples_ns(call, n)) / 1000.0


def bench_ppe(calls):
    with ProcessPoolExecutor(WORKERS) as ex:
        wait([ex.submit(trivial, i) for i in range(1000)])
        t0 = time.perf_counter()
        wait([ex.submit(trivial, i) for i in range(calls)])
        return calls / (time.perf_counter() - t0)


def bench_mp(calls):
    with multiprocessing.Pool(WORKERS) as pool:
        for r in [pool.apply_async(trivial, (i,)) for i in range(1000)]:
            r.get()
        t0 = time.perf_counter()
        results = [pool.apply_async(trivial, (i,)) for i in range(calls)]
        for r in results:
            r.get()
        return calls / (time.perf_counter() - t0)


def serve_p50():
    with multiprocessing.Pool(WORKERS) as pool:
        p50_us(lambda i: pool.apply(trivial, (i,)), 200)
        print("ready", flush=True)
        for line in sys.stdin:
            n = int(line)
            print(p50_us(lambda i: pool.apply(trivial, (i,)), n), flush=True)


def latency_us(call, n):
    """p50 and p99 of ``n`` calls of ``call``, µs (nearest rank)."""
    samples = sorted(samples_ns(call, n))
    return (samples[round((n - 1) * 0.5)] / 1000.0, samples[round((n - 1) * 0.99)] / 1000.0)


def serve_latency():
    """As ``serve_p50``, but each block prints ``p50 p99`` (µs)."""
    with multiprocessing.Pool(WORKERS) as pool:
        latency_us(lambda i: pool.apply(trivial, (i,)), 200)
        print("ready", flush=True)
        for line in sys.stdin:
            p50, p99 = latency_us(lambda i: pool.apply(trivial, (i,)), int(line))
            print(f"{p50} {p99}", flush=True)


def main():
    if sys.argv[1:2] == ["serve-latency"]:
        serve_latency()
        return
    if sys.argv[1:2] == ["serve-p50"]:
        serve_p50()
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    print(json.dumps({
        "ppe_calls_per_s": bench_ppe(calls),
        "mp_calls_per_s": bench_mp(calls),
    }))


if __name__ == "__main__":
    main()
