"""The write path side by side: actorkv (this checkout and, optionally, another) and peers.

``python -m bench.writepath [--other DIR] [--repeats 3] [--out FILE]`` runs every workload
in a fresh process per measurement, alternating engines round by round so that a noisy
neighbour hits them alike, and prints each engine's median with the spread (min-max) and
its ratio to this checkout's actorkv. ``--other`` names another checkout of actorkv (a git
worktree of an older commit, say): its ``actors`` package is measured with the same
workload code, so "new vs previous" is a ratio from one run.

Workloads (keys ``key%013d``, values 100 random bytes):

- ``put16``: 16 threads of durable puts, each on its own keys (sqlite3: one connection per
  thread, and one thread on one connection as its best case);
- ``put1``: one thread of durable puts (the raw loop: ``os.write`` + ``os.fsync`` of 160 B);
- ``put1-never``: one thread, no fsync (sqlite3 synchronous=NORMAL);
- ``async``: one thread pipelining ``put_async``, durable;
- ``batch``: 1,000 puts in one durable batch (sqlite3: ``executemany`` in one transaction);
- ``get``: 100,000 caller-thread gets in random order (lmdb: one read transaction);
- ``replay``: reopening a key space of 1,000,000 single-put records.

The child runs this file as a script (``python writepath.py --child ENGINE WORKLOAD N``)
and prints one JSON object; it imports nothing from ``bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VALUE = os.urandom(100)
WORKLOADS: dict[str, tuple[tuple[str, ...], int]] = {
    # workload: (engines besides actorkv, operations)
    "put16": (("sqlite-full-1", "sqlite-full-16"), 8000),
    "put1": (("sqlite-full-1", "raw-fsync"), 3000),
    "put1-never": (("sqlite-normal-1",), 30000),
    "async": ((), 30000),
    "batch": (("sqlite-full-1",), 30),
    "get": (("lmdb-one-txn",), 100000),
    "replay": ((), 1000000),
}


def key(i: int) -> str:
    return f"key{i:013d}"


def timed_threads(threads: int, per: int, work: Callable[[int, int], object]) -> float:
    barrier = threading.Barrier(threads + 1)

    def body(t: int) -> None:
        barrier.wait()
        for i in range(per):
            work(t, i)

    started = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for thread in started:
        thread.start()
    barrier.wait()
    begin = time.perf_counter()
    for thread in started:
        thread.join()
    return time.perf_counter() - begin


def child_actorkv(workload: str, n: int, directory: str) -> dict[str, float]:
    from actors import Store  # from whichever checkout sys.path names first

    if workload == "fill":
        with Store.open(directory, fsync="never") as store:
            ks = store.keyspace("b")
            for start in range(0, n, 10000):
                for future in [ks.put_async(key(i), VALUE) for i in range(start, start + 10000)]:
                    future.get()
        return {}
    if workload == "reopen":
        begin = time.perf_counter()
        with Store.open(directory) as store:
            replayed = store.keyspace("b").stats().records_replayed
        return {"ops_per_s": replayed / (time.perf_counter() - begin)}
    fsync = "never" if workload == "put1-never" else "always"
    with Store.open(directory, fsync=fsync) as store:
        ks = store.keyspace("b")
        return ACTORKV_WORKLOADS[workload](ks, n)


def _put16(ks: Any, n: int) -> dict[str, float]:
    elapsed = timed_threads(16, n // 16, lambda t, i: ks.put(key(t * 10**6 + i), VALUE))
    return {"ops_per_s": n / elapsed, "fsyncs_per_op": ks.stats().fsyncs / n}


def _put1(ks: Any, n: int) -> dict[str, float]:
    begin = time.perf_counter()
    for i in range(n):
        ks.put(key(i), VALUE)
    return {"ops_per_s": n / (time.perf_counter() - begin)}


def _put_async(ks: Any, n: int) -> dict[str, float]:
    begin = time.perf_counter()
    for future in [ks.put_async(key(i), VALUE) for i in range(n)]:
        future.get()
    return {"ops_per_s": n / (time.perf_counter() - begin)}


def _batch(ks: Any, n: int) -> dict[str, float]:
    times = []
    for r in range(n):
        begin = time.perf_counter()
        with ks.batch() as batch:
            for i in range(1000):
                batch.put(key(r * 1000 + i), VALUE)
        times.append(time.perf_counter() - begin)
    return {"ops_per_s": 1000 / statistics.median(times)}


def _get(ks: Any, n: int) -> dict[str, float]:
    with ks.batch() as batch:
        for i in range(n):
            batch.put(key(i), VALUE)
    keys = [key(i) for i in range(n)]
    random.Random(7).shuffle(keys)
    best = min(_time_gets(ks.get, keys) for _ in range(5))
    return {"ops_per_s": n / best}


ACTORKV_WORKLOADS: dict[str, Callable[[Any, int], dict[str, float]]] = {
    "put16": _put16,
    "put1": _put1,
    "put1-never": _put1,
    "async": _put_async,
    "batch": _batch,
    "get": _get,
}


def _time_gets(get: Callable[[Any], Any], keys: list[Any]) -> float:
    begin = time.perf_counter()
    for k in keys:
        get(k)
    return time.perf_counter() - begin


def child_peer(engine: str, workload: str, n: int, directory: str) -> dict[str, float]:
    if engine == "raw-fsync":
        fd = os.open(Path(directory) / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        record = b"r" * 160
        begin = time.perf_counter()
        for _ in range(n):
            os.write(fd, record)
            os.fsync(fd)
        return {"ops_per_s": n / (time.perf_counter() - begin)}
    if engine == "lmdb-one-txn":
        import lmdb

        env = lmdb.open(directory, map_size=1 << 30, sync=True, metasync=True)
        keys = [key(i).encode() for i in range(n)]
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(k, VALUE)
        random.Random(7).shuffle(keys)
        with env.begin() as txn:
            best = min(_time_gets(txn.get, keys) for _ in range(5))
        return {"ops_per_s": n / best}
    sync = "NORMAL" if "normal" in engine else "FULL"

    def connect() -> sqlite3.Connection:
        path = Path(directory) / "db.sqlite"
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync}")
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        return db

    insert = "INSERT OR REPLACE INTO kv VALUES (?, ?)"
    if workload == "put16" and engine.endswith("-16"):
        dbs = [connect() for _ in range(16)]
        elapsed = timed_threads(
            16, n // 16, lambda t, i: dbs[t].execute(insert, (key(t * 10**6 + i).encode(), VALUE))
        )
        return {"ops_per_s": n / elapsed}
    db = connect()
    if workload == "batch":
        times = []
        for r in range(n):
            rows = [(key(r * 1000 + i).encode(), VALUE) for i in range(1000)]
            begin = time.perf_counter()
            db.execute("BEGIN")
            db.executemany(insert, rows)
            db.execute("COMMIT")
            times.append(time.perf_counter() - begin)
        return {"ops_per_s": 1000 / statistics.median(times)}
    count = min(n, 3000) if sync == "FULL" else n  # put16's best case: one thread
    begin = time.perf_counter()
    for i in range(count):
        db.execute(insert, (key(i).encode(), VALUE))
    return {"ops_per_s": count / (time.perf_counter() - begin)}


def run_child(engine: str, workload: str, n: str) -> dict[str, float]:
    if workload in ("fill", "reopen"):  # n is "COUNT:DIRECTORY"
        count, _, directory = n.partition(":")
        return child_actorkv(workload, int(count), directory)
    with tempfile.TemporaryDirectory(prefix="actorkv-writepath-") as directory:
        if engine.startswith("actorkv"):
            return child_actorkv(workload, int(n), directory)
        return child_peer(engine, workload, int(n), directory)


def measure(engine: str, workload: str, n: int, root: Path) -> dict[str, float]:
    """One measurement in a fresh process whose ``actors`` comes from ``root``."""
    if workload == "replay":  # written by one process, reopened by the next
        with tempfile.TemporaryDirectory(prefix="actorkv-writepath-") as directory:
            _run(engine, "fill", f"{n}:{directory}", root)
            return _run(engine, "reopen", f"{n}:{directory}", root)
    return _run(engine, workload, str(n), root)


def _run(engine: str, workload: str, n: str, root: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, __file__, "--child", engine, workload, n]
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        msg = f"{engine} {workload} failed: {done.stderr.strip()[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writepath", description=__doc__)
    parser.add_argument("--other", type=Path, help="another checkout to measure beside this one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated workloads (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--child", nargs=3, metavar=("ENGINE", "WORKLOAD", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        engine, workload, n = args.child
        print(json.dumps(run_child(engine, workload, n)))
        return 0
    here = Path(__file__).resolve().parent.parent
    workloads = args.only.split(",") if args.only else list(WORKLOADS)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for workload in workloads:
        peers, n = WORKLOADS[workload]
        n = max(1, int(n * args.scale))
        engines: list[tuple[str, Path]] = [("actorkv", here)]
        if args.other is not None:
            engines.append(("actorkv-other", args.other.resolve()))
        engines += [(peer, here) for peer in peers]
        rows = results.setdefault(workload, {})
        for _ in range(args.repeats):  # round by round: a noisy moment hits every engine
            for engine, root in engines:
                rows.setdefault(engine, []).append(measure(engine, workload, n, root))
        print(_summary(workload, rows), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


def _summary(workload: str, rows: dict[str, list[dict[str, float]]]) -> str:
    base = statistics.median(r["ops_per_s"] for r in rows["actorkv"])
    lines = [f"{workload}:"]
    for engine, runs in rows.items():
        rates = sorted(r["ops_per_s"] for r in runs)
        median = statistics.median(rates)
        extra = ""
        if "fsyncs_per_op" in runs[0]:
            extra = f"  fsyncs/op {statistics.median(r['fsyncs_per_op'] for r in runs):.3f}"
        lines.append(
            f"  {engine:16s} {median:>11,.0f} ops/s  (spread {rates[0]:,.0f}-{rates[-1]:,.0f})"
            f"  actorkv / this = {base / median:5.2f}x{extra}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
