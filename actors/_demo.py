"""``actorkv demo``: write key-value events to a log, reopen it, read them back.

A one-minute tour of the storage engine, printed as it goes.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import msgspec

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

__all__ = ["demo"]


def demo(directory: Path, count: int, *, as_json: bool = False) -> int:
    """Write ``count`` puts, a batch and an expiry durably, reopen, replay and check them.

    Prints what it does as it goes, or (``as_json``) one JSON summary at the end.
    """
    say = (lambda _: None) if as_json else click.echo
    say(f"actorkv demo: log in {directory}")
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
    written = time.perf_counter() - started
    say(
        f"  wrote {count + 1} puts, 1 atomic batch and 1 expiry as seq 1..{last} "
        f"in {written * 1000:.1f} ms"
    )
    started = time.perf_counter()
    with SegmentedLog.open(directory) as log:
        replayed = [(seq, decode_event(payload)) for seq, payload in log.read()]
        recovered = log.recovery
    reread = time.perf_counter() - started
    say(f"  reopened and replayed {len(replayed)} records in {reread * 1000:.1f} ms")
    say(f"  torn tail cut on open: {recovered or 'none'}")
    folded = KVState()  # the key spaces' own fold: puts, deletes, batches and expiries
    for seq, event in replayed:
        folded.apply(event, seq)
    folded.commit()
    state = {key: _value(entry) for key, entry in folded.scan()}
    expected = count - 1
    ok = len(replayed) == last and len(state) == expected and state["user:00001"] == {"n": -1}
    say(
        f"  state after replay: {len(state)} keys (expected {expected}); first: "
        f"{min(state)!r} -> {state[min(state)]!r}"
    )
    say("  OK: every event read back" if ok else "  MISMATCH: replay differs from what was written")
    if as_json:
        summary = {
            "ok": ok,
            "directory": str(directory),
            "records": last,
            "replayed": len(replayed),
            "keys": len(state),
            "expected_keys": expected,
            "write_seconds": written,
            "replay_seconds": reread,
        }
        click.echo(msgspec.json.encode(summary).decode())
    return 0 if ok else 1


def _value(entry: Entry) -> object:
    return entry.value if entry.decoded else decode_value(entry.value)
