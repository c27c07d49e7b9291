"""Python baseline for the start-up benchmark (``benches/startup.rs``).

``py_startup.py METHOD``: the time until a ``multiprocessing.Pool(4)`` with
start method METHOD (``forkserver``, ``spawn`` or ``fork``) is ready, every
worker having started (each puts its pid on a queue from its initializer).
Prints the milliseconds. Run in a fresh interpreter per figure, so that a
forkserver started by an earlier figure does not make the next one cheap.
"""
import multiprocessing
import sys
import time

WORKERS = 4


def started(queue):
    import os

    queue.put(os.getpid())


def main():
    method = sys.argv[1]
    ctx = multiprocessing.get_context(method)
    t0 = time.perf_counter()
    queue = ctx.SimpleQueue()
    pool = ctx.Pool(WORKERS, initializer=started, initargs=(queue,))
    pids = {queue.get() for _ in range(WORKERS)}
    elapsed = time.perf_counter() - t0
    assert len(pids) == WORKERS
    pool.terminate()
    pool.join()
    print(f"{elapsed * 1e3:.3f}")


if __name__ == "__main__":
    main()
