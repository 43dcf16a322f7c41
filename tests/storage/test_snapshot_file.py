"""The snapshot file (``storage/snapshot.py``) and a key space's state in it (``kv_snapshot``).

A snapshot reads back exactly what was written, chunk by chunk; a damaged one (cut short at
any byte, any bit of it flipped) raises ``CorruptLog`` naming the file by the time its chunks
are consumed, and nothing it yielded before differs from what was written. The trailer is
parsed here from ``docs/format.md``, not through the module, so a bug in the reader cannot
hide itself.
"""

from __future__ import annotations

import errno
import hashlib
import math
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import Store
from storage import CorruptLog
from storage.codec import Delete, Put, encode_value
from storage.kv_snapshot import (
    CHUNK_ITEMS,
    SCHEMA_DECODED_SCALARS,
    SCHEMA_HAS_TTL,
    capture,
    encode_chunks,
    load_state,
    schema_of,
)
from storage.kvstate import KVState
from storage.snapshot import (
    KIND_ACTOR,
    KIND_KEYSPACE,
    SnapshotInfo,
    list_snapshots,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)
from tests.keyspace.conftest import FakeClock, keyspace_dir
from tests.storage.faults import FaultInjector
from tests.storage.helpers import append_bytes, flip_bit, truncate

HEADER = 60  # magic, version, kind, seq, schema, chain head, CRC-32
TRAILER = struct.Struct("<IQQ32sI")  # 0xFFFFFFFF, chunks, items, BLAKE2b-256, CRC-32
CHUNKS = [[1, "one"], [b"\x00two", None, 2.5], [], [{"three": [3]}], ["four"] * 30, ["5" * 60]]
"""Items of a small snapshot: six chunks (one empty), 350-odd bytes on disk."""


def encode(chunks: list[list[Any]]) -> list[tuple[bytes, int]]:
    return [(msgspec.msgpack.encode(items), len(items)) for items in chunks]


def write_small(directory: Path, seq: int = 42) -> SnapshotInfo:
    return write_snapshot(directory, seq, KIND_ACTOR, 7, encode(CHUNKS))


def consume(path: Path, into: list[bytes]) -> tuple[int, int, int]:
    """Read a snapshot to its end, appending each payload to ``into`` as it is yielded."""
    kind, seq, schema, chunks = read_snapshot(path)
    for payload in chunks:
        into.append(payload)  # noqa: PERF402 (kept as yielded, before a later chunk raises)
    return kind, seq, schema


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, bytes]:
    """A pristine small snapshot: its path and bytes."""
    directory = tmp_path / "pristine"
    directory.mkdir()
    info = write_small(directory)
    return info.path, info.path.read_bytes()


def damaged_copies(tmp_path: Path, name: str, variants: Iterator[bytes]) -> Iterator[Path]:
    """Each variant written in turn under the snapshot's own name in a fresh directory."""
    directory = tmp_path / "damaged"
    directory.mkdir()
    path = directory / name
    for data in variants:
        path.write_bytes(data)
        yield path


def assert_refused_without_wrong_data(path: Path, original: list[bytes]) -> None:
    """Reading to the end raises CorruptLog naming ``path``; every yielded chunk is intact."""
    yielded: list[bytes] = []
    with pytest.raises(CorruptLog) as raised:
        consume(path, yielded)
    assert raised.value.path == path
    assert yielded == original[: len(yielded)]


# -- round trips -----------------------------------------------------------------------------


def test_a_snapshot_reads_back_every_chunk_in_order(tmp_path: Path):
    info = write_small(tmp_path)
    path = tmp_path / "00000000000000000042.snap"
    assert info == SnapshotInfo(42, path.stat().st_size, path, sum(map(len, CHUNKS)))
    payloads: list[bytes] = []
    assert consume(path, payloads) == (KIND_ACTOR, 42, 7)
    assert [msgspec.msgpack.decode(p) for p in payloads] == CHUNKS
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no .tmp left


def test_a_snapshot_of_no_chunks_is_a_header_and_a_trailer(tmp_path: Path):
    info = write_snapshot(tmp_path, 1, KIND_KEYSPACE, 0, iter([]))
    assert (info.seq, info.bytes, info.items) == (1, HEADER + TRAILER.size, 0)
    payloads: list[bytes] = []
    assert consume(info.path, payloads) == (KIND_KEYSPACE, 1, 0)
    assert payloads == []


def test_the_trailer_counts_the_chunks_and_items_and_digests_every_payload(tmp_path: Path):
    info = write_small(tmp_path)
    data = info.path.read_bytes()
    end, chunks, items, digest, crc = TRAILER.unpack(data[-TRAILER.size :])
    assert (end, chunks, items) == (0xFFFFFFFF, len(CHUNKS), sum(map(len, CHUNKS)))
    assert crc == zlib.crc32(data[-TRAILER.size : -4])
    whole = hashlib.blake2b(digest_size=32)
    for payload, _ in encode(CHUNKS):
        whole.update(payload)
    assert digest == whole.digest()
    magic, version, kind, seq, schema, head, header_crc = struct.unpack(
        "<8sHHQI32sI", data[:HEADER]
    )
    assert (magic, version, kind, seq, schema, head) == (
        b"AKVSNAP\n",
        2,
        KIND_ACTOR,
        42,
        7,
        bytes(32),
    )
    assert header_crc == zlib.crc32(data[: HEADER - 4])


def test_snapshots_are_listed_newest_first_and_a_stray_tmp_never_counts(tmp_path: Path):
    for seq in (5, 300, 41):
        write_small(tmp_path, seq)
    newest = (tmp_path / snapshot_name(300)).read_bytes()
    (tmp_path / (snapshot_name(900) + ".tmp")).write_bytes(newest)  # complete, not renamed
    (tmp_path / "900.snap").write_bytes(newest)  # not 20 digits
    (tmp_path / "0000000000000000000x.snap").write_bytes(newest)
    assert list_snapshots(tmp_path) == [
        (300, tmp_path / snapshot_name(300)),
        (41, tmp_path / snapshot_name(41)),
        (5, tmp_path / snapshot_name(5)),
    ]


@pytest.mark.parametrize("operation", ["write_all", "fsync", "rename", "fsync_dir"])
def test_a_failed_write_leaves_nothing_under_the_snapshot_name(tmp_path: Path, operation: str):
    nth = 3 if operation == "write_all" else 1  # the header, a chunk, then this one
    with FaultInjector(operation, nth, errno.EIO), pytest.raises(OSError, match="injected"):
        write_small(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    if operation == "fsync_dir":
        # The rename happened, only its durability is unknown: what is left under the name
        # is the whole snapshot (never listed by a caller whose write raised).
        assert names == {snapshot_name(42)}
        payloads: list[bytes] = []
        consume(tmp_path / snapshot_name(42), payloads)
        assert [msgspec.msgpack.decode(p) for p in payloads] == CHUNKS
    else:
        assert names == set()


def test_a_chunk_source_that_raises_leaves_nothing_behind(tmp_path: Path):
    def chunks() -> Iterator[tuple[bytes, int]]:
        yield msgspec.msgpack.encode([1]), 1
        raise MemoryError

    with pytest.raises(MemoryError):
        write_snapshot(tmp_path, 3, KIND_ACTOR, 0, chunks())
    assert list(tmp_path.iterdir()) == []


# -- byte damage -----------------------------------------------------------------------------


def test_the_small_snapshot_spans_several_chunks_in_a_few_hundred_bytes(small):
    path, data = small
    payloads: list[bytes] = []
    consume(path, payloads)
    assert len(payloads) == len(CHUNKS)
    assert len(data) == HEADER + sum(8 + len(p) for p, _ in encode(CHUNKS)) + TRAILER.size
    assert 300 <= len(data) <= 500


def test_a_snapshot_cut_at_any_byte_is_corrupt(small, tmp_path: Path):
    path, data = small
    original: list[bytes] = []
    consume(path, original)
    variants = (data[:size] for size in range(len(data)))
    checked = 0
    for copy in damaged_copies(tmp_path, path.name, variants):
        assert_refused_without_wrong_data(copy, original)
        checked += 1
    assert checked == len(data)


def test_a_snapshot_with_any_bit_flipped_is_corrupt(small, tmp_path: Path):
    path, data = small
    original: list[bytes] = []
    consume(path, original)
    directory = tmp_path / "damaged"
    directory.mkdir()
    copy = directory / path.name
    for offset in range(len(data)):
        for bit in range(8):
            copy.write_bytes(data)
            flip_bit(copy, offset, bit)
            assert_refused_without_wrong_data(copy, original)


def test_a_snapshot_with_bytes_after_its_trailer_is_corrupt(small, tmp_path: Path):
    path, _ = small
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    append_bytes(copy, b"\x00")
    original: list[bytes] = []
    consume(path, original)
    assert_refused_without_wrong_data(copy, original)


def test_a_snapshot_under_another_seqs_name_is_corrupt(small, tmp_path: Path):
    path, _ = small
    renamed = tmp_path / snapshot_name(43)
    shutil.copyfile(path, renamed)
    with pytest.raises(CorruptLog) as raised:
        read_snapshot(renamed)
    assert raised.value.path == renamed


def test_a_damaged_keyspace_snapshot_never_loads(tmp_path: Path):
    state = populated_state(FakeClock())
    info = write_snapshot(
        tmp_path, 99, KIND_KEYSPACE, schema_of(state), encode_chunks(*capture(state))
    )
    data = info.path.read_bytes()
    variants = [data[: len(data) // 2], data[:-1]]
    for offset in range(0, len(data), max(1, len(data) // 97)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        variants.append(bytes(damaged))
    for copy in damaged_copies(tmp_path, info.path.name, iter(variants)):
        with pytest.raises(CorruptLog) as raised:
            load_state(copy, state.clock, decode_scalars=True)
        assert raised.value.path == copy


def test_an_actor_snapshot_is_not_loaded_as_a_keyspace(small):
    path, _ = small
    with pytest.raises(CorruptLog, match="not a key space") as raised:
        load_state(path, FakeClock(), decode_scalars=True)
    assert raised.value.path == path


def test_truncation_is_reported_even_when_it_leaves_whole_chunks(small, tmp_path: Path):
    path, data = small
    copy = tmp_path / path.name
    copy.write_bytes(data)
    truncate(copy, len(data) - TRAILER.size)  # every chunk, no trailer
    original: list[bytes] = []
    consume(path, original)
    yielded: list[bytes] = []
    with pytest.raises(CorruptLog, match="truncated") as raised:
        consume(copy, yielded)
    assert raised.value.path == copy
    assert yielded == original  # all of it yielded, then refused: the caller must not trust it


# -- a key space's state ---------------------------------------------------------------------

SCALARS: dict[str, Any] = {
    "int": 7,
    "neg": -(2**63),
    "big": 2**64 - 1,
    "float": 2.5,
    "inf": math.inf,
    "str": "text",
    "empty": "",
    "bytes": b"\x00\xff",
    "true": True,
    "none": None,
}
CONTAINERS: dict[str, Any] = {
    "list": [1, "two", None],
    "dict": {"a": [1, 2], "b": {"c": b"d"}},
    "empty-list": [],
}


KEYS_HELD = len(SCALARS) + len(CONTAINERS) + 3 + 2 * CHUNK_ITEMS + 5
"""Keys of :func:`populated_state`: three TTL keys and three chunks' worth of bulk ones."""


def populated_state(clock: FakeClock, *, decode_scalars: bool = True) -> KVState:
    """A committed state over several chunks: scalars, containers, TTLs, rewrites, deletes."""
    state = KVState(clock, decode_scalars=decode_scalars)
    seq = 0

    def put(key: str, value: Any, ttl: float | None = None) -> None:
        nonlocal seq
        seq += 1
        expires_at = None if ttl is None else clock.now + ttl
        state.apply(Put(key, encode_value(value), expires_at), seq)

    for key, value in {**SCALARS, **CONTAINERS}.items():
        put(key, value)
    put("int", 8)  # version 2
    put("list", [4], ttl=30.0)  # version 2, expiring
    put("ttl-a", "soon", ttl=5.0)
    put("ttl-b", {"later": 1}, ttl=500.0)
    put("ttl-c", 3, ttl=5.0)  # the same expiry as ttl-a
    put("gone", 1)
    state.commit()
    seq += 1
    state.apply(Delete("gone"), seq)
    state.commit()
    for i in range(2 * CHUNK_ITEMS + 5):  # three chunks
        put(f"bulk{i:05d}", i if i % 3 else [i])
    put("bulk00000", "rewritten")
    state.commit()
    state._check()
    return state


def read_value(entry: Any) -> Any:
    """The value as a key space without a value_type reads it."""
    return entry.value if entry.decoded else msgspec.msgpack.decode(entry.value)


@pytest.mark.parametrize("decode_scalars", [True, False], ids=["decoded", "encoded"])
def test_a_keyspace_state_round_trips_exactly(tmp_path: Path, decode_scalars: bool):
    clock = FakeClock()
    state = populated_state(clock, decode_scalars=decode_scalars)
    schema = schema_of(state)
    assert schema == (SCHEMA_DECODED_SCALARS if decode_scalars else 0) | SCHEMA_HAS_TTL
    keys, entries = capture(state)
    info = write_snapshot(tmp_path, 12345, KIND_KEYSPACE, schema, encode_chunks(keys, entries))
    assert (
        info.items == len(state.entries) == len(SCALARS) + len(CONTAINERS) + 3 + 2 * CHUNK_ITEMS + 5
    )
    _, _, _, chunks = read_snapshot(info.path)
    assert sum(1 for _ in chunks) == 3
    loaded, seq = load_state(info.path, clock, decode_scalars=decode_scalars)
    assert seq == 12345
    assert (loaded.clock, loaded.decode_scalars) == (clock, decode_scalars)
    assert list(loaded.entries.items()) == list(state.entries.items())  # order, every field
    assert list(loaded.expiring) == list(state.expiring)
    assert [key for _, key in loaded.expiring] == ["ttl-a", "ttl-c", "list", "ttl-b"]
    assert (loaded.pending, loaded.pending_ttl) == ({}, False)
    assert "gone" not in loaded.entries
    assert (loaded.entries["int"].version, loaded.entries["list"].version) == (2, 2)
    loaded._check()


@pytest.mark.parametrize("written_decoded", [True, False], ids=["decoded", "encoded"])
def test_a_keyspace_state_loads_under_the_other_scalar_policy(
    tmp_path: Path, written_decoded: bool
):
    clock = FakeClock()
    state = populated_state(clock, decode_scalars=written_decoded)
    info = write_snapshot(
        tmp_path, 77, KIND_KEYSPACE, schema_of(state), encode_chunks(*capture(state))
    )
    loaded, _ = load_state(info.path, clock, decode_scalars=not written_decoded)
    assert loaded.decode_scalars is not written_decoded
    assert list(loaded.entries) == list(state.entries)
    for key, entry in state.entries.items():
        other = loaded.entries[key]
        assert read_value(other) == read_value(entry)
        assert type(read_value(other)) is type(read_value(entry))
        assert (other.version, other.seq, other.expires_at) == (
            entry.version,
            entry.seq,
            entry.expires_at,
        )
        # Decoded only where the loading policy decodes, and only scalars (never containers).
        assert other.decoded == (
            not written_decoded and not isinstance(read_value(entry), list | dict)
        )
    assert list(loaded.expiring) == list(state.expiring)
    loaded._check()


@pytest.mark.parametrize(
    ("written_with", "read_with"),
    [(None, int | str | list | dict), (int | str | list | dict, None)],
    ids=["untyped-then-typed", "typed-then-untyped"],
)
def test_a_keyspace_snapshot_reads_back_the_same_under_the_other_value_type(
    tmp_path: Path, written_with: Any, read_with: Any
):
    values = {"n": 7, "s": "text", "l": [1, "x"], "d": {"a": [1, 2]}, "neg": -5}
    path = tmp_path / "store"
    clock = FakeClock()
    with Store.open(path, recovery_budget=None, clock=clock) as store:
        ks = store.keyspace("ks", value_type=written_with)
        for key, value in values.items():
            ks.put(key, value)
        ks.put("n", 8)
        ks.put("t", "expiring", ttl=60)
        info = ks.snapshot()
        before = {key: ks.get_entry(key) for key in ks}
    assert info.path.parent == keyspace_dir(path, "ks")
    with Store.open(path, recovery_budget=None, clock=clock) as store:
        ks = store.keyspace("ks", value_type=read_with)
        assert ks.stats().records_replayed == 0
        assert {key: ks.get_entry(key) for key in ks} == before
        assert dict(ks.items()) == {**values, "n": 8, "t": "expiring"}
        assert ks.get_entry("n").version == 2
        assert ks.put("n", 9, expect_version=2).version == 3
        clock.advance(61)
        assert ks.get("t") is None
        assert ks.sweep() == 1  # the expiry index came back with the entries
