"""Every put record carries the version it gave its key, equal to what replay counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import Store
from actors._events import event_codec_for
from actors._keyspace_actor import KeySpaceActor
from storage import LogReader
from storage.codec import Batch, Put
from tests.keyspace.conftest import FakeClock

pytestmark = pytest.mark.usefixtures("runtime")


def recorded_puts(path: Path) -> list[tuple[int, str, int]]:
    """``(seq, key, version)`` of every put in the key space's log, in order."""
    codec = event_codec_for(KeySpaceActor)
    found = []
    reader = LogReader.open(path / "keyspaces" / "k")
    for seq, payload in reader.read():
        for event in codec.decode(payload):
            events = event.events if isinstance(event, Batch) else (event,)
            found += [(seq, e.key, e.version) for e in events if isinstance(e, Put)]
    return found


def test_puts_record_the_versions_callers_were_given(tmp_path: Path, clock: FakeClock) -> None:
    given: list[tuple[int, str, int]] = []
    with Store.open(tmp_path, clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace("k")
        for key in ["a", "b", "a", "a"]:
            receipt = ks.put(key, 1)
            given.append((receipt.seq, key, receipt.version))
        ks.delete("a")
        receipt = ks.put("a", 2)  # recreated: version 1 again
        given.append((receipt.seq, "a", receipt.version))
        with ks.batch() as batch:  # the unchecked path (no TTL anywhere, no expectation)
            batch.put("b", 3)
            batch.put("b", 4)
            batch.delete("b")
            batch.put("b", 5)
            batch.put("c", 6)
        seq = batch.receipt.seq
        given += [(seq, "b", 2), (seq, "b", 3), (seq, "b", 1), (seq, "c", 1)]
        with ks.batch() as batch:  # the checked path
            batch.put("c", 7, expect_version=1)
            batch.increment("n")
        given += [(batch.receipt.seq, "c", 2), (batch.receipt.seq, "n", 1)]
        receipt = ks.put("t", 1, ttl=5)
        given.append((receipt.seq, "t", 1))
        ks.put("t", 2, ttl=5)
        given.append((receipt.seq + 1, "t", 2))
        clock.now += 10
        receipt = ks.put("t", 3)  # over the expired key: Expired, then a fresh put
        given.append((receipt.seq, "t", 1))
        given.append((ks.last_seq + 1, "c", 3))
        assert ks.increment("c", 0) == 7
        entries = {key: ks.get_entry(key).version for key in ["a", "b", "c", "n", "t"]}
    assert recorded_puts(tmp_path) == given
    with Store.open(tmp_path, clock=clock) as store:
        ks = store.keyspace("k")  # replay counts the same versions
        assert {key: ks.get_entry(key).version for key in entries} == entries
