"""Handles that outlive their key space, and batches used outside their one block, raise.

A key space handle kept after ``store.close()`` or ``drop_keyspace()`` raises
``KeyspaceClosed`` for every read and write, with a message that names the cure; it never
answers from the state it had (after a reopen elsewhere that would be old data). A
``WriteBatch`` is single-use: ``put``/``delete`` outside its one ``with`` block and a second
entry raise ``InvalidOperation``, and nothing is written.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import ActorStopped, KeySpace, KeyspaceClosed, Store
from storage.errors import InvalidOperation
from tests.keyspace.conftest import TIMEOUT, log_bytes

CLOSED = "was closed with its store; open the store again and call store.keyspace('ks')"
DROPPED = "key space 'ks' was dropped"


def _batch(ks: KeySpace) -> None:
    with ks.batch() as batch:
        batch.put("k", "stale")


def _delitem(ks: KeySpace) -> None:
    del ks["k"]


def _setitem(ks: KeySpace) -> None:
    ks["k"] = "stale"


USES = [
    pytest.param(lambda ks: ks.get("k"), id="get"),
    pytest.param(lambda ks: ks.get("missing", 0), id="get-missing"),
    pytest.param(lambda ks: ks["k"], id="getitem"),
    pytest.param(lambda ks: ks.get_entry("k"), id="get_entry"),
    pytest.param(lambda ks: ks.get_many(["k", "k2"]), id="get_many"),
    pytest.param(lambda ks: list(ks.range()), id="range"),
    pytest.param(lambda ks: list(ks.range("a", "z", reverse=True, limit=1)), id="range-bounded"),
    pytest.param(lambda ks: list(ks.prefix("k")), id="prefix"),
    pytest.param(list, id="iter"),
    pytest.param(len, id="len"),
    pytest.param(lambda ks: "k" in ks, id="contains"),
    pytest.param(lambda ks: list(ks.items()), id="items"),
    pytest.param(lambda ks: list(ks.keys()), id="keys"),
    pytest.param(lambda ks: list(ks.values()), id="values"),
    pytest.param(lambda ks: asyncio.run(ks.aget("k")), id="aget"),
    pytest.param(lambda ks: ks.put("k", "stale"), id="put"),
    pytest.param(lambda ks: ks.put_async("k", "stale").get(timeout=TIMEOUT), id="put_async"),
    pytest.param(_setitem, id="setitem"),
    pytest.param(lambda ks: ks.delete("k"), id="delete"),
    pytest.param(lambda ks: ks.delete_async("k").get(timeout=TIMEOUT), id="delete_async"),
    pytest.param(_delitem, id="delitem"),
    pytest.param(_batch, id="batch"),
    pytest.param(lambda ks: ks.clear(), id="clear"),
    pytest.param(lambda ks: ks.sweep(), id="sweep"),
    pytest.param(lambda ks: asyncio.run(ks.aput("k", "stale")), id="aput"),
    pytest.param(lambda ks: asyncio.run(ks.adelete("k")), id="adelete"),
]


@pytest.fixture(params=["closed", "closed-then-reopened", "dropped", "dropped-then-recreated"])
def stale(request: pytest.FixtureRequest, store_path: Path) -> Iterator[tuple[KeySpace, str]]:
    """A handle on key space 'ks' (holding k and k2) after it went away, and the message."""
    store = Store.open(store_path)
    ks = store.keyspace("ks")
    ks.put("k", "old")
    ks.put("k2", "old")
    how: str = request.param
    if how.startswith("closed"):
        store.close()
        message = CLOSED
        if how == "closed-then-reopened":
            store = Store.open(store_path)  # a new owner of the same directory
    else:
        store.drop_keyspace("ks")
        message = DROPPED
    if how.endswith(("reopened", "recreated")):
        fresh = store.keyspace("ks")
        fresh.put("k", "new")
        fresh.put("k3", "new")
    yield ks, message
    store.close()


@pytest.mark.parametrize("use", USES)
def test_every_read_and_write_on_a_closed_or_dropped_handle_raises_keyspace_closed(
    stale: tuple[KeySpace, str], use: Callable[[KeySpace], Any]
):
    ks, message = stale
    with pytest.raises(KeyspaceClosed, match=re.escape(message)) as closed:
        use(ks)
    assert closed.type is KeyspaceClosed  # not ActorStopped, whose "spawn it again" misleads
    assert not isinstance(closed.value, ActorStopped)
    assert "spawn it again" not in str(closed.value)


def test_a_stale_handle_never_reads_old_data_or_writes_after_a_reopen(store_path: Path):
    with Store.open(store_path) as store:
        stale = store.keyspace("ks")
        stale.put("k", "old")
    with Store.open(store_path) as store:
        fresh = store.keyspace("ks")
        fresh.put("k", "new")
        for read in (lambda: stale.get("k"), lambda: stale["k"], lambda: dict(stale.items())):
            with pytest.raises(KeyspaceClosed, match=re.escape(CLOSED)):
                read()
        with pytest.raises(KeyspaceClosed, match=re.escape(CLOSED)):
            stale.put("k", "stale")
        assert fresh.last_seq == 2
    with Store.open(store_path) as store:
        assert dict(store.keyspace("ks").items()) == {"k": "new"}


# -- batches ----------------------------------------------------------------------------------


def test_entering_a_used_batch_again_raises_and_writes_nothing(store_path: Path, ks: KeySpace):
    ks.put("z", 0)
    with ks.batch() as batch:
        batch.put("a", 1)
        batch.delete("z")
    assert dict(ks.items()) == {"a": 1}
    last_seq, files = ks.last_seq, log_bytes(store_path, "ks")
    with pytest.raises(InvalidOperation, match="single-use"), batch:
        pass
    assert ks.last_seq == last_seq
    assert log_bytes(store_path, "ks") == files
    assert dict(ks.items()) == {"a": 1}


def test_reusing_a_batch_never_overwrites_an_update_made_since(store_path: Path, ks: KeySpace):
    with ks.batch() as batch:
        batch.put("k", "from the batch")
    ks.put("k", "newer")  # another writer, after the batch
    last_seq, files = ks.last_seq, log_bytes(store_path, "ks")
    with pytest.raises(InvalidOperation), batch:
        batch.put("other", 1)
    assert ks["k"] == "newer"
    assert ks.get_entry("k").version == 2
    assert "other" not in ks
    assert (ks.last_seq, log_bytes(store_path, "ks")) == (last_seq, files)


def test_put_and_delete_after_the_block_raise_and_write_nothing(store_path: Path, ks: KeySpace):
    with ks.batch() as batch:
        batch.put("a", 1)
    last_seq, files = ks.last_seq, log_bytes(store_path, "ks")
    with pytest.raises(InvalidOperation, match="after its with block"):
        batch.put("b", 2)
    with pytest.raises(InvalidOperation, match="after its with block"):
        batch.delete("a")
    assert len(batch) == 1
    assert (ks.last_seq, log_bytes(store_path, "ks")) == (last_seq, files)
    assert dict(ks.items()) == {"a": 1}


def test_put_and_delete_on_a_batch_never_entered_raise(store_path: Path, ks: KeySpace):
    ks.put("a", 1)
    batch = ks.batch()
    with pytest.raises(InvalidOperation, match="before its with block"):
        batch.put("b", 2)
    with pytest.raises(InvalidOperation, match="before its with block"):
        batch.delete("a")
    assert len(batch) == 0
    assert ks.last_seq == 1
    with batch:  # its one block: only what is added inside is written
        batch.put("c", 3)
    assert ks.last_seq == 2
    assert dict(ks.items()) == {"a": 1, "c": 3}


def test_entering_a_batch_inside_its_own_block_raises(ks: KeySpace):
    with ks.batch() as batch:
        batch.put("a", 1)
        with pytest.raises(InvalidOperation, match="single-use"), batch:
            pass
        batch.put("b", 2)  # still inside the one block
    assert ks.last_seq == 1  # one record, written once
    assert batch.receipt is not None
    assert batch.receipt.seq == 1
    assert dict(ks.items()) == {"a": 1, "b": 2}


def test_a_batch_whose_block_raised_writes_nothing_and_cannot_be_used_again(
    store_path: Path, ks: KeySpace
):
    ks.put("a", 0)
    last_seq, files = ks.last_seq, log_bytes(store_path, "ks")
    batch = ks.batch()

    def abandon() -> None:
        with batch:
            batch.put("a", 1)
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        abandon()
    assert batch.receipt is None
    with pytest.raises(InvalidOperation):
        batch.put("a", 2)
    with pytest.raises(InvalidOperation), batch:
        pass
    assert (ks.last_seq, log_bytes(store_path, "ks")) == (last_seq, files)
    assert dict(ks.items()) == {"a": 0}
