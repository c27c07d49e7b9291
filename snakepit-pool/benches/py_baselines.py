"""Python baselines for the pool benchmark: the same trivial call through
concurrent.futures.ProcessPoolExecutor and multiprocessing.Pool, 2 workers.

Prints one JSON object: calls/s with many calls in flight (one submit /
apply_async per call, no batching).

``py_baselines.py serve-p50``: starts a multiprocessing.Pool(2), prints
``ready``, then for each line N read from stdin prints the p50 of N
``apply`` calls (µs), until stdin closes. The pool benchmark alternates
these blocks with its own, so that both are measured in the same minutes.

``py_baselines.py serve-rate N``: a multiprocessing.Pool(N), then for each
line ``SECONDS`` read from stdin prints its calls/s over that many seconds,
``apply_async`` with many calls in flight (the curves benchmark's baseline
for N workers).

``py_baselines.py serve-spin P``: calibrates the showcase adapter's ``spin``
to 1 ms and prints ``ready ITERATIONS``; then for each line ``K SECONDS``
prints the calls/s of ``spin(ITERATIONS)`` called in-process in a loop by
K processes at once (K <= P; K = 1 is this process), for that many seconds,
and the CPU time per call in µs.

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


def mp_rate(pool, seconds):
    """Calls/s of apply_async on ``pool`` for about ``seconds``, in chunks of
    500 calls in flight."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        for r in [pool.apply_async(trivial, (i,)) for i in range(500)]:
            r.get()
        calls += 500
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls / elapsed


def serve_rate(workers):
    with multiprocessing.Pool(workers) as pool:
        mp_rate(pool, 0.2)
        print("ready", flush=True)
        for line in sys.stdin:
            print(mp_rate(pool, float(line)), flush=True)


def spin_loop(iterations, seconds):
    """How many ``spin(iterations)`` calls fit in ``seconds``, the time they
    took and the CPU time they used (s)."""
    from snakepit_bridge.adapters.showcase import spin

    calls = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        spin(iterations)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls, elapsed, time.process_time() - cpu0


def calibrate_spin(target_s=0.001):
    """The iterations of ``spin`` that take ``target_s`` of CPU time here
    (median of 50; CPU time, so that other processes on the machine do not
    count)."""
    from snakepit_bridge.adapters.showcase import spin

    iterations = 2000
    for _ in range(3):
        samples = []
        for _ in range(50):
            t0 = time.thread_time()
            spin(iterations)
            samples.append(time.thread_time() - t0)
        iterations = max(1, round(iterations * target_s / statistics.median(samples)))
    return iterations


def serve_spin(processes):
    iterations = calibrate_spin()
    with multiprocessing.Pool(processes) as pool:
        print(f"ready {iterations}", flush=True)
        for line in sys.stdin:
            k, seconds = line.split()
            k = max(1, min(int(k), processes))
            if k == 1:
                runs = [spin_loop(iterations, float(seconds))]
            else:
                runs = pool.starmap(spin_loop, [(iterations, float(seconds))] * k)
            rate = sum(calls / elapsed for calls, elapsed, _ in runs)
            cpu_us = sum(cpu for _, _, cpu in runs) * 1e6 / sum(calls for calls, _, _ in runs)
            print(rate, cpu_us, flush=True)


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
    if sys.argv[1:2] == ["serve-rate"]:
        serve_rate(int(sys.argv[2]))
        return
    if sys.argv[1:2] == ["serve-spin"]:
        serve_spin(int(sys.argv[2]))
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    print(json.dumps({
        "ppe_calls_per_s": bench_ppe(calls),
        "mp_calls_per_s": bench_mp(calls),
    }))


if __name__ == "__main__":
    main()
