"""Small adapters for the peers the key space benchmarks compare against.

Each stores ``str`` keys and ``bytes`` values behind the same five calls, ``put``, ``get``,
``scan(start, n)``, ``put_many`` and ``close``, and is configured to be as durable as
actorkv with ``fsync="always"``: a put returns only once it is on disk. The ``durability``
attribute says how.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

__all__ = ["LmdbPeer", "SqlitePeer"]


class SqlitePeer:
    """sqlite3, one connection: one commit per put; ``put_many`` is one transaction.

    Open one per thread on the same directory for concurrent writers (sqlite3 serializes
    them on its write lock; ``busy_timeout`` makes a writer wait instead of failing).
    """

    durability = "sqlite3 WAL, synchronous=FULL: every commit fsyncs the WAL"

    def __init__(self, directory: Path) -> None:
        self.db = sqlite3.connect(
            directory / "kv.sqlite3", timeout=60, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def put(self, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))  # autocommit

    def get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def scan(self, start: str, n: int) -> Iterator[tuple[str, bytes]]:
        return iter(
            self.db.execute("SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?", (start, n))
        )

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", items)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class LmdbPeer:
    """LMDB: one write transaction per put; ``put_many`` is one transaction.

    One per process and directory (LMDB forbids opening an environment twice in a process);
    share it between threads. ``get`` opens a read transaction per call, so that, like a
    key space's ``get``, each call sees the newest committed write.
    """

    durability = "LMDB sync=True, metasync=True: every write transaction fsyncs"

    def __init__(self, directory: Path, map_size: int = 4 << 30) -> None:
        self.env = lmdb.open(str(directory), map_size=map_size, sync=True, metasync=True)

    def put(self, key: str, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), value)

    def get(self, key: str) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(key.encode())

    def scan(self, start: str, n: int) -> Iterator[tuple[str, bytes]]:
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start.encode()):
                return
            for count, (key, value) in enumerate(cursor.iternext(), 1):
                yield key.decode(), value
                if count == n:
                    return

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for key, value in items:
                txn.put(key.encode(), value)

    def close(self) -> None:
        self.env.close()
