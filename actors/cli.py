"""The ``actorkv`` command line.

``actorkv bench [--quick] ...`` runs the benchmarking suite (``bench.driver.cli``; see
``actorkv bench --help``). ``actorkv demo [DIR]`` writes key-value events to a log, reopens
it, reads them back and prints what it did: a one-minute tour of the storage engine.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from storage import SegmentedLog
from storage.codec import (
    Batch,
    Delete,
    Expired,
    Put,
    decode_event,
    decode_value,
    encode_event,
    encode_value,
)
from storage.kvstate import Entry, KVState


def demo(directory: Path, count: int) -> int:
    """Write ``count`` puts, a batch and an expiry durably, reopen, replay and check them."""
    print(f"actorkv demo: log in {directory}")
    now = time.time()
    events = [
        Put(f"user:{i:05d}", encode_value({"n": i, "name": f"user {i}"})) for i in range(count)
    ]
    events.append(Put("session:1", encode_value(b"token"), expires_at=now + 30))
    batch = Batch((Delete("user:00000"), Put("user:00001", encode_value({"n": -1}))), now)
    expiry = Expired(("session:1",), now + 30)  # what a key space's sweep records
    started = time.perf_counter()
    with SegmentedLog.open(directory, fsync="always") as log:
        log.append_batch([encode_event(event) for event in events])
        log.append(encode_event(batch))
        last = log.append(encode_event(expiry))
    elapsed = time.perf_counter() - started
    print(
        f"  wrote {count + 1} puts, 1 atomic batch and 1 expiry as seq 1..{last} "
        f"in {elapsed * 1000:.1f} ms"
    )
    started = time.perf_counter()
    with SegmentedLog.open(directory) as log:
        replayed = [(seq, decode_event(payload)) for seq, payload in log.read()]
        recovered = log.recovery
    elapsed = time.perf_counter() - started
    print(f"  reopened and replayed {len(replayed)} records in {elapsed * 1000:.1f} ms")
    print(f"  torn tail cut on open: {recovered or 'none'}")
    folded = KVState()  # the key spaces' own fold: puts, deletes, batches and expiries
    for seq, event in replayed:
        folded.apply(event, seq)
    folded.commit()
    state = {key: _value(entry) for key, entry in folded.scan()}
    expected = count - 1
    ok = len(replayed) == last and len(state) == expected and state["user:00001"] == {"n": -1}
    print(
        f"  state after replay: {len(state)} keys (expected {expected}); first: "
        f"{min(state)!r} -> {state[min(state)]!r}"
    )
    print(
        "  OK: every event read back" if ok else "  MISMATCH: replay differs from what was written"
    )
    return 0 if ok else 1


def _value(entry: Entry) -> object:
    return entry.value if entry.decoded else decode_value(entry.value)


def bench(argv: list[str]) -> int:
    """Run the benchmarking suite with ``argv`` (its own options; see ``--help``)."""
    try:
        driver = importlib.import_module("bench.driver.cli")  # not imported by the library
    except ImportError as exc:
        print(f"actorkv bench: the benchmarking suite is not importable ({exc})", file=sys.stderr)
        return 2
    status: int = driver.main(argv)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actorkv`` console script."""
    parser = argparse.ArgumentParser(prog="actorkv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "bench",
        add_help=False,  # --help goes to the suite's own parser
        help="run the benchmarking suite (actorkv bench --help for its options)",
    )
    demo_parser = commands.add_parser("demo", help="write, reopen and read back a log")
    demo_parser.add_argument(
        "directory", nargs="?", type=Path, help="log directory (default: a temporary one)"
    )
    demo_parser.add_argument("--count", type=int, default=1000, help="puts to write (default 1000)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.directory is not None:
        return demo(args.directory, args.count)
    with tempfile.TemporaryDirectory(prefix="actorkv-demo-") as tmp:
        return demo(Path(tmp), args.count)


if __name__ == "__main__":
    sys.exit(main())
