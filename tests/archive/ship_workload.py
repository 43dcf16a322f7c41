"""Child of the kill -9 shipping test: durable puts into a store that ships to an archive.

Usage: ``python ship_workload.py STORE ARCHIVE_URL``. Prints each acknowledged put's seq;
the parent kills it at a random moment, most likely in the middle of a shipping round.
"""

from __future__ import annotations

import sys

from actors import Store


def main() -> None:
    path, archive = sys.argv[1], sys.argv[2]
    with Store.open(path, archive=archive, segment_bytes=4096, archive_interval=0.01) as store:
        ks = store.keyspace("k")
        i = 0
        while True:
            receipt = ks.put(f"k{i % 97}", {"i": i, "pad": "x" * (i % 50)})
            print(receipt.seq, flush=True)
            i += 1


if __name__ == "__main__":
    main()
