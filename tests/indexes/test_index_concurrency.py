"""Index queries under concurrent writers: every result is the primary data at one seq.

A writer rewrites every key in one batch per generation, giving each key a new bucket and
the generation number; another thread moves single keys between buckets with operate. A
query that mixed two points would show two generations, a key twice, a key missing, or a
value whose bucket is not the index value it was found under.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

from actors import Index, Store, ops
from tests.keyspace.conftest import TIMEOUT

KEYS = [f"k{i:03}" for i in range(200)]
BUCKETS = 7


def test_queries_see_one_consistent_point_while_writers_run(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", fsync="never") as store:
        ks = store.keyspace("k", indexes={"bucket": Index(field="bucket")})
        with ks.batch() as batch:
            for key in KEYS:
                batch.put(key, {"bucket": 0, "gen": 0})
        stop = threading.Event()
        errors: list[BaseException] = []

        def rewrite_all() -> None:
            rng = random.Random(1)
            generation = 0
            while not stop.is_set():
                generation += 1
                with ks.batch() as batch:
                    for key in KEYS:
                        batch.put(key, {"bucket": rng.randrange(BUCKETS), "gen": generation})

        def move_one() -> None:
            rng = random.Random(2)
            while not stop.is_set():
                ks.operate(rng.choice(KEYS), [ops.set("bucket", rng.randrange(BUCKETS))])

        def guarded(target: object) -> threading.Thread:
            def run() -> None:
                try:
                    target()  # type: ignore[operator]
                except BaseException as exc:  # reported below
                    errors.append(exc)

            return threading.Thread(target=run)

        writers = [guarded(rewrite_all), guarded(move_one)]
        for writer in writers:
            writer.start()
        seen: set[int] = set()  # generations the queries saw: proof they overlapped writes
        queries = 0
        try:
            while len(seen) < 20 and queries < 20_000:
                found = list(ks.index("bucket").range())
                assert sorted(key for _, key, _ in found) == KEYS  # each key once
                generations = {value["gen"] for _, _, value in found}
                assert len(generations) == 1  # one batch's point
                seen |= generations
                assert all(bucket == value["bucket"] for bucket, _, value in found)
                low = random.randrange(BUCKETS)
                part = list(ks.index("bucket").range(low, low + 2))
                assert all(low <= value["bucket"] < low + 2 for _, _, value in part)
                assert len({value["gen"] for _, _, value in part}) <= 1
                counted = ks.index("bucket").count()
                assert counted == len(KEYS)
                queries += 1
        finally:
            stop.set()
            for writer in writers:
                writer.join(TIMEOUT)
        assert not errors, errors
        assert len(seen) >= 20, f"{queries} queries saw only {len(seen)} generations"
