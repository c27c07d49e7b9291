"""The baseline of the large-payload benchmark (large_payloads.rs):
multiprocessing.Pool(1).apply of a function echoing its bytes argument,
pickled over the pool's pipes both ways.

Prints ``ready``, then for each line ``SIZE N`` read from stdin prints the
median round trip of N calls with a SIZE-byte argument (µs), until stdin
closes. The Rust side alternates these blocks with its own.
"""
import multiprocessing
import statistics
import sys
import time


def echo(data):
    return data


def main():
    payloads = {}
    with multiprocessing.Pool(1) as pool:
        pool.apply(echo, (b"warm",))
        print("ready", flush=True)
        for line in sys.stdin:
            size, n = (int(x) for x in line.split())
            if size not in payloads:
                payloads[size] = (bytes(range(251)) * (size // 251 + 1))[:size]
            data = payloads[size]
            samples = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                out = pool.apply(echo, (data,))
                samples.append(time.perf_counter_ns() - t0)
                assert len(out) == size
            print(statistics.median(samples) / 1000.0, flush=True)


if __name__ == "__main__":
    main()
