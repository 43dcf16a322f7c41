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
from storage.codec import Batch, Delete, Put, decode_event, decode_value, encode_event, encode_value


def demo(directory: Path, count: int) -> int:
    """Write ``count`` puts and one batch durably, reopen, replay and check them."""
    print(f"actorkv demo: log in {directory}")
    events = [
        Put(f"user:{i:05d}", encode_value({"n": i, "name": f"user {i}"})) for i in range(count)
    ]
    batch = Batch((Delete("user:00000"), Put("user:00001", encode_value({"n": -1}))), time.time())
    started = time.perf_counter()
    with SegmentedLog.open(directory, fsync="always") as log:
        last = log.append_batch([encode_event(event) for event in events])
        last = log.append(encode_event(batch))
    elapsed = time.perf_counter() - started
    print(f"  wrote {count} puts and 1 atomic batch as seq 1..{last} in {elapsed * 1000:.1f} ms")
    started = time.perf_counter()
    with SegmentedLog.open(directory) as log:
        replayed = [(seq, decode_event(payload)) for seq, payload in log.read()]
        recovered = log.recovery
    elapsed = time.perf_counter() - started
    print(f"  reopened and replayed {len(replayed)} records in {elapsed * 1000:.1f} ms")
    print(f"  torn tail cut on open: {recovered or 'none'}")
    state: dict[str | bytes, object] = {}
    for _, event in replayed:
        for change in event.events if isinstance(event, Batch) else (event,):
            match change:
                case Put(key=key, value=value):
                    state[key] = decode_value(value)
                case Delete(key=key):
                    state.pop(key, None)
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
