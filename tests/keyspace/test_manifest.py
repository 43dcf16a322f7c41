"""Each log directory keeps a manifest of the options its records depend on.

A key space's records can be applied only with the key type they were written with, so its
``MANIFEST`` (``storage/manifest.py``, ``docs/format.md``) records the key type, and a key
space opened with the other one is refused with ``InvalidOption`` before anything reaches
its log. A damaged manifest is ``CorruptLog``, never a guess. The manifest is durable
before the first record is written.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import CorruptLog, EventSourcedActor, InvalidOption, Store
from storage import _fileio
from storage._format import FORMAT_VERSION
from storage.manifest import read_manifest, write_manifest
from tests.keyspace.conftest import keyspace_dir, log_bytes
from tests.storage.faults import DurabilityTracker
from tests.storage.helpers import flip_bit

KEYS = {str: ["alpha", "beta", "gamma"], bytes: [b"alpha", b"beta", b"gamma"]}
OTHER = {str: bytes, bytes: str}


def manifest_path(store_path: Path, name: str = "ks") -> Path:
    return keyspace_dir(store_path, name) / "MANIFEST"


def read_manifest_file(path: Path) -> dict[str, Any]:
    """The manifest's fields, after checking the file's layout and CRC independently."""
    data = path.read_bytes()
    stored = json.loads(data)
    assert sorted(stored) == ["crc32", "manifest"]
    head, tail = b'{"manifest":', b',"crc32":' + str(stored["crc32"]).encode() + b"}\n"
    assert data.startswith(head)
    assert data.endswith(tail)
    assert zlib.crc32(data[len(head) : -len(tail)]) == stored["crc32"]
    fields: dict[str, Any] = stored["manifest"]
    return fields


def write_keyspace(store_path: Path, key_type: type) -> int:
    """Write a few keys of ``key_type`` to key space "ks" and close; returns its last_seq."""
    with Store.open(store_path) as store:
        ks = store.keyspace("ks", key_type=key_type)
        for i, key in enumerate(KEYS[key_type]):
            ks.put(key, i)
        ks.delete(KEYS[key_type][0])
        return ks.last_seq


def assert_intact(store_path: Path, key_type: type, last_seq: int) -> None:
    """The key space opens with ``key_type``, holding what it held, and takes writes."""
    with Store.open(store_path) as store:
        ks = store.keyspace("ks", key_type=key_type)
        assert ks.last_seq == last_seq
        assert dict(ks.items()) == {key: i for i, key in enumerate(KEYS[key_type]) if i}
        assert ks.put(KEYS[key_type][0], "again").seq == last_seq + 1


@pytest.mark.parametrize("key_type", [str, bytes], ids=["str", "bytes"])
def test_a_new_keyspace_records_its_key_type_in_its_manifest(store_path: Path, key_type: type):
    with Store.open(store_path) as store:
        store.keyspace("ks", key_type=key_type)
        fields = read_manifest_file(manifest_path(store_path))
    fields.pop("format_version", None)  # see the test of the format version below
    assert fields == {"kind": "keyspace", "key_type": key_type.__name__}


class Noted(msgspec.Struct, tag=True, frozen=True):
    text: str


class Notebook(EventSourcedActor[list[str]]):
    def initial_state(self) -> list[str]:
        return []

    def apply(self, state: list[str], event: Noted) -> list[str]:
        return [*state, event.text]


def test_a_custom_actors_log_has_a_manifest_naming_its_class(store_path: Path):
    with Store.open(store_path) as store:
        store.spawn("notes", Notebook)
        fields = read_manifest_file(store_path / "actors" / "notes" / "MANIFEST")
    fields.pop("format_version", None)  # see the test of the format version below
    assert fields == {"kind": "actor", "actor_class": f"{__name__}.Notebook"}


def test_every_manifest_states_the_format_version_it_was_written_with(store_path: Path):
    # Left out as a default, a later actorkv would read a version-1 manifest as its own
    # (newer) default version.
    with Store.open(store_path) as store:
        store.keyspace("ks")
        store.spawn("notes", Notebook)
    for manifest in (manifest_path(store_path), store_path / "actors" / "notes" / "MANIFEST"):
        assert read_manifest_file(manifest).get("format_version") == FORMAT_VERSION


@pytest.mark.parametrize("key_type", [str, bytes], ids=["str", "bytes"])
def test_a_keyspace_reopened_with_another_key_type_is_refused_and_its_log_is_untouched(
    store_path: Path, key_type: type
):
    last_seq = write_keyspace(store_path, key_type)
    before = log_bytes(store_path, "ks")
    other = OTHER[key_type]

    with Store.open(store_path) as store:
        for _ in range(2):  # a refused open leaves nothing half open behind
            with pytest.raises(InvalidOption) as refused:
                store.keyspace("ks", key_type=other)
            assert f"holds {key_type.__name__} keys" in str(refused.value)
            assert f"open it with key_type={key_type.__name__}" in str(refused.value)
        assert log_bytes(store_path, "ks") == before
        ks = store.keyspace("ks", key_type=key_type)
        assert ks.last_seq == last_seq
    assert log_bytes(store_path, "ks") == before

    assert_intact(store_path, key_type, last_seq)
    with Store.open(store_path) as store, pytest.raises(InvalidOption):
        store.keyspace("ks", key_type=other)


@pytest.mark.parametrize("key_type", [str, bytes], ids=["str", "bytes"])
def test_a_keyspace_written_before_manifests_is_checked_against_its_replayed_keys(
    store_path: Path, key_type: type
):
    last_seq = write_keyspace(store_path, key_type)
    manifest = manifest_path(store_path)
    written = read_manifest_file(manifest)
    manifest.unlink()  # as a store written before manifests existed
    before = log_bytes(store_path, "ks")

    with Store.open(store_path) as store:
        with pytest.raises(InvalidOption) as refused:
            store.keyspace("ks", key_type=OTHER[key_type])
        assert f"holds {key_type.__name__} keys" in str(refused.value)
        assert log_bytes(store_path, "ks") == before  # no record, and no manifest either
        ks = store.keyspace("ks", key_type=key_type)
        assert ks.last_seq == last_seq
        assert read_manifest_file(manifest) == written  # written at the first good open

    assert_intact(store_path, key_type, last_seq)
    with Store.open(store_path) as store, pytest.raises(InvalidOption):
        store.keyspace("ks", key_type=OTHER[key_type])


def flip_in_key_type(path: Path) -> None:
    flip_bit(path, path.read_bytes().index(b'"str"') + 1)  # "str" -> "rtr": valid JSON


def flip_in_checksum(path: Path) -> None:
    flip_bit(path, path.read_bytes().rindex(b"}") - 1)  # the CRC's last digit


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def not_json(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a manifest\n")


def with_fields(**fields: Any) -> Callable[[Path], None]:
    """Rewrite the manifest with other fields and a correct CRC."""

    def rewrite(path: Path) -> None:
        body = json.dumps({"kind": "keyspace", "key_type": "str", **fields}).encode()
        path.write_bytes(b'{"manifest":%s,"crc32":%d}\n' % (body, zlib.crc32(body)))

    return rewrite


DAMAGE = {
    "bit flip in the key type": (flip_in_key_type, "checksum"),
    "bit flip in the checksum": (flip_in_checksum, "checksum"),
    "truncated": (truncate_to_half, "not readable JSON"),
    "empty": (empty, "not readable JSON"),
    "not JSON": (not_json, "not readable JSON"),
    "newer format version": (with_fields(format_version=FORMAT_VERSION + 1), "upgrade"),
    "unknown kind": (with_fields(kind="table"), "unexpected contents"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_manifest_is_corrupt_log_naming_the_file(store_path: Path, damage: str):
    last_seq = write_keyspace(store_path, str)
    manifest = manifest_path(store_path)
    good = manifest.read_bytes()
    spoil, reason = DAMAGE[damage]
    spoil(manifest)
    before = log_bytes(store_path, "ks")

    with Store.open(store_path) as store:
        for key_type in (str, bytes):
            with pytest.raises(CorruptLog) as corrupt:
                store.keyspace("ks", key_type=key_type)
            assert corrupt.value.path == manifest
            assert str(manifest) in str(corrupt.value)
            assert reason in corrupt.value.reason
    assert log_bytes(store_path, "ks") == before

    manifest.write_bytes(good)
    assert_intact(store_path, str, last_seq)


def test_the_manifest_is_durable_before_the_first_record_is_written(
    tmp_path: Path, store_path: Path, monkeypatch: pytest.MonkeyPatch
):
    manifest = manifest_path(store_path)
    at_first_record: list[int | None] = []
    write_all = _fileio.write_all

    def watching_write_all(fd: int, data: bytes) -> None:
        if not at_first_record and Path(f"/proc/self/fd/{fd}").readlink().suffix == ".seg":
            at_first_record.append(tracker.synced_length(manifest))
        write_all(fd, data)

    with DurabilityTracker(root=tmp_path) as tracker:
        monkeypatch.setattr(_fileio, "write_all", watching_write_all)
        store = Store.open(store_path)
        store.keyspace("ks").put("k", 1)
        tracker.cut_power()
        store.close()
        tracker.crash()
        monkeypatch.undo()

    written = manifest.read_bytes()
    assert at_first_record == [len(written)]  # the whole manifest, durable, file and entry
    assert read_manifest_file(manifest)["key_type"] == "str"
    with Store.open(store_path) as store:
        with pytest.raises(InvalidOption):
            store.keyspace("ks", key_type=bytes)
        assert store.keyspace("ks")["k"] == 1


def test_a_manifest_of_format_1_says_2_once_its_log_continues_in_format_2(tmp_path):
    with Store.open(tmp_path) as store:
        store.keyspace("k").put("a", 1)
    directory = tmp_path / "keyspaces" / "k"
    old = read_manifest(directory)
    write_manifest(directory, msgspec.structs.replace(old, format_version=1))
    with Store.open(tmp_path) as store:
        assert store.keyspace("k").get("a") == 1
    assert read_manifest(directory) == old  # format 2 again, nothing else changed
