"""The Ray runtime against the threads runtime, in one run, on a local Ray cluster.

Figures (reported in ``extra_info`` and printed, never asserted):

1. put and get through each runtime, 1 and 4 key spaces: one blocking caller thread per key
   space, ``fsync="always"``; throughput (ops/s, all callers) and per-call p50/p99;
2. how aggregate put throughput scales from 1 to 2 Ray workers: two caller threads writing
   to one key space (one host process) against two key spaces (two host processes, each
   reserving ``num_cpus=1`` of the cluster's 2).

Run with ``pytest bench/test_ray_bench.py --benchmark-only -s``. Each variant runs in
rounds, interleaved, and the figures are medians over the rounds.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors import Store
from bench.conftest import bench_size

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> Any:
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _drive(keyspaces: list[Any], seconds: float, op: str) -> tuple[float, list[float]]:
    """One caller thread per key space for ``seconds``; (ops/s, every call's latency)."""
    latencies: list[list[float]] = [[] for _ in keyspaces]
    stop = threading.Event()

    def caller(index: int) -> None:
        ks, mine, i = keyspaces[index], latencies[index], 0
        while not stop.is_set():
            began = time.perf_counter()
            if op == "put":
                ks.put(f"k{i % 1000}", i)
            else:
                ks.get(f"k{i % 1000}")
            mine.append(time.perf_counter() - began)
            i += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(len(keyspaces))]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    every = [latency for mine in latencies for latency in mine]
    return len(every) / (time.perf_counter() - began), every


def _figures(rates: list[float], latencies: list[float]) -> dict[str, Any]:
    latencies.sort()
    return {
        "ops/s": round(statistics.median(rates)),
        "ops/s range": [round(min(rates)), round(max(rates))],
        "p50 us": round(latencies[len(latencies) // 2] * 1e6),
        "p99 us": round(latencies[int(len(latencies) * 0.99)] * 1e6),
    }


@pytest.mark.parametrize("count", [1, 4])
def test_put_and_get_ray_vs_threads(benchmark, cluster: Any, tmp_path: Path, count: int) -> None:
    seconds, rounds = bench_size(3, 1) * 1.0, bench_size(3, 1)
    results: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for round_number in range(rounds):
        for runtime in ("threads", "ray"):
            path = tmp_path / f"{runtime}-{round_number}"
            with Store.open(path, runtime=runtime, fsync="always") as store:
                keyspaces = [store.keyspace(f"ks{n}") for n in range(count)]
                for op in ("put", "get"):
                    rate, latencies = _drive(keyspaces, seconds, op)
                    rates, every = results.setdefault((runtime, op), ([], []))
                    rates.append(rate)
                    every.extend(latencies)
    benchmark.pedantic(lambda: None, rounds=1)
    figures = {f"{runtime} {op}": _figures(*results[runtime, op]) for runtime, op in results}
    for op in ("put", "get"):  # how many times the threads runtime's throughput
        threads, on_ray = (statistics.median(results[r, op][0]) for r in ("threads", "ray"))
        figures[f"{op}: threads / ray throughput"] = round(threads / on_ray, 1)
    benchmark.extra_info.update(figures)
    print(f"\n{count} key space(s): {figures}")


def test_put_throughput_from_one_to_two_ray_workers(
    benchmark, cluster: Any, tmp_path: Path
) -> None:
    seconds, rounds = bench_size(3, 1) * 1.0, bench_size(3, 1)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for round_number in range(rounds):
        for workers in (1, 2):
            path = tmp_path / f"w{workers}-{round_number}"
            with Store.open(
                path, runtime="ray", fsync="always", ray_options={"num_cpus": 1.0}
            ) as store:
                keyspaces = [store.keyspace(f"ks{n}") for n in range(workers)]
                # Two callers either way: on one worker they share one host.
                callers = [keyspaces[n % workers] for n in range(2)]
                rate, _ = _drive(callers, seconds, "put")
                rates[workers].append(rate)
    benchmark.pedantic(lambda: None, rounds=1)
    figures = {
        "1 worker put ops/s": round(statistics.median(rates[1])),
        "2 workers put ops/s": round(statistics.median(rates[2])),
        "scaling": round(statistics.median(rates[2]) / statistics.median(rates[1]), 2),
        "ranges": {k: [round(min(v)), round(max(v))] for k, v in rates.items()},
    }
    benchmark.extra_info.update(figures)
    print(f"\nscaling: {figures}")
