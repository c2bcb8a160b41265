"""Interleaved rounds for the single-thread benchmarks: every contender once per round, in a
shuffled order, so machine noise lands on all of them alike; the median round is the figure."""

from __future__ import annotations

import random
import statistics
import threading
import time
from typing import Any, Callable, Mapping


def ops_per_second(fn: Callable[[], Any], seconds: float) -> float:
    batch = 50
    done = 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def median_ops(fns: Mapping[str, Callable[[], Any]], rounds: int, seconds: float) -> dict[str, float]:
    """Median ops/s of each contender over ``rounds`` interleaved rounds of ``seconds`` each."""
    for fn in fns.values():  # every contender works before anything is timed
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            samples[name].append(ops_per_second(fns[name], seconds))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, median: Mapping[str, float], checks: Mapping[str, bool]) -> int:
    """Print the table (ops/s, us/op, ratios to the ceiling and to pyjwt) and the targets; exit code."""
    ceiling = median["ceiling"]
    print(title)
    print(f"{'contender':<18} {'ops/s':>12} {'us/op':>9} {'vs ceiling':>11} {'vs pyjwt':>9}")
    for name, value in sorted(median.items(), key=lambda kv: -kv[1]):
        print(f"{name:<18} {value:>12,.0f} {1e6 / value:>9.2f} {value / ceiling:>11.2f} {value / median['pyjwt']:>9.2f}")
    return verdict(checks)


def verdict(checks: Mapping[str, bool]) -> int:
    """Print each target as PASS or MISS; the exit code (1 when any missed)."""
    for label, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {label}")
    return 0 if all(checks.values()) else 1


def thread_scaling(fn: Callable[[], Any], seconds: float, threads: int = 2, rounds: int = 3) -> float:
    """Throughput of ``threads`` threads calling ``fn`` over one thread's, median of ``rounds``."""
    ratios = []
    for _ in range(rounds):
        single = ops_per_second(fn, seconds)
        counts = [0] * threads
        barrier = threading.Barrier(threads + 1)
        stop = threading.Event()

        def work(i: int) -> None:
            barrier.wait()
            while not stop.is_set():
                for _ in range(20):
                    fn()
                counts[i] += 20

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for t in pool:
            t.join()
        ratios.append(sum(counts) / (time.perf_counter() - start) / single)
    return statistics.median(ratios)
