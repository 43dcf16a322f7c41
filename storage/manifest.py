"""The manifest: facts about one log directory that must survive restarts.

A log's records say what happened; the manifest says how to read them: the format version,
what kind of log it is, and the options its data depends on (a key space's key type: a
str-keyed log reopened as bytes-keyed would accept records it cannot apply). Later
features add their facts here (snapshots, retention floor, archive progress).

On disk, ``MANIFEST`` in the log directory is one JSON object (see ``docs/format.md``,
"Manifest")::

    {"manifest": {"format_version": 1, "kind": "keyspace", "key_type": "str"}, "crc32": 123}

``crc32`` is the CRC-32 of the exact bytes of the ``manifest`` value. It is replaced
atomically: written to ``MANIFEST.tmp``, fsynced, renamed over ``MANIFEST``, directory
fsynced; a crash leaves the old manifest or the new one, never a mix.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import msgspec

from storage import _fileio
from storage._format import FORMAT_VERSION, MANIFEST_FILE, TMP_SUFFIX
from storage.errors import CorruptLog

__all__ = [
    "IndexDefinition",
    "ListedSnapshot",
    "Manifest",
    "read_manifest",
    "remove_unfinished_manifest",
    "write_manifest",
]

LogKind = Literal["log", "keyspace", "actor"]


class ListedSnapshot(msgspec.Struct, frozen=True):
    """A snapshot the manifest vouches for: complete and durable when it was listed.

    Attributes:
        seq: The last record it includes.
        file: Its file name in the log directory.
        bytes: Its size.
        items: How many items (keys) it holds.
    """

    seq: int
    file: str
    bytes: int
    items: int = 0


class IndexDefinition(msgspec.Struct, frozen=True, omit_defaults=True):
    """A key space's secondary index, as its manifest keeps it.

    Attributes:
        name: The index's name.
        field: The field path it indexes, one name per level (a name may hold a dot), or
            None for a key function.
        key: The key function's qualified name (``module.qualname``), for the error that
            asks for it again at open; None for a field index.
        unique: Whether it refuses a second key with the same value.
    """

    name: str
    field: tuple[str, ...] | None = None
    key: str | None = None
    unique: bool = False


class Manifest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a log directory holds and the options its records depend on.

    Attributes:
        format_version: The log format version the directory was written with (always
            stored: a reader of a later version must know what it reads).
        kind: ``"keyspace"``, ``"actor"`` or ``"log"`` (a bare ``SegmentedLog``).
        key_type: A key space's key type, ``"str"``, ``"bytes"`` or ``"tuple"`` (tuple
            keys are stored as ``storage.tuplekey`` bytes).
        actor_class: A custom actor's class (``module.QualName``), for inspection.
        snapshots: The snapshots recovery may start from, newest first.
        indexes: A key space's secondary indexes (their contents are rebuilt at open).
    """

    format_version: int
    kind: LogKind = "log"
    key_type: Literal["str", "bytes", "tuple"] | None = None
    actor_class: str | None = None
    snapshots: tuple[ListedSnapshot, ...] = ()
    indexes: tuple[IndexDefinition, ...] = ()


class _Stored(msgspec.Struct, frozen=True):
    manifest: msgspec.Raw
    crc32: int


_ENCODER = msgspec.json.Encoder()
_STORED = msgspec.json.Decoder(_Stored)
_MANIFEST = msgspec.json.Decoder(Manifest)


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of the log in ``directory``, or None if it has none (an older log).

    Raises:
        CorruptLog: The file is damaged, or was written by a newer format version.
    """
    path = directory / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        stored = _STORED.decode(data)
    except msgspec.DecodeError as exc:
        raise CorruptLog(path, 0, f"the manifest is not readable JSON ({exc})") from exc
    body = bytes(stored.manifest)
    if zlib.crc32(body) != stored.crc32:
        raise CorruptLog(path, 0, "the manifest's checksum does not match its contents")
    try:
        manifest = _MANIFEST.decode(body)
    except msgspec.DecodeError as exc:
        raise CorruptLog(path, 0, f"the manifest has unexpected contents ({exc})") from exc
    if manifest.format_version > FORMAT_VERSION:
        reason = (
            f"written by format version {manifest.format_version}; this version of actorkv "
            f"reads up to {FORMAT_VERSION}: upgrade actorkv"
        )
        raise CorruptLog(path, 0, reason)
    return manifest


def remove_unfinished_manifest(directory: Path) -> None:
    """Delete a ``MANIFEST.tmp`` a crash left before its rename (the old one still holds)."""
    tmp = directory / (MANIFEST_FILE + TMP_SUFFIX)
    if tmp.exists():
        _fileio.remove(tmp)
        _fileio.fsync_dir(directory)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace the manifest of ``directory`` atomically and durably.

    Raises:
        OSError: It could not be written; the previous manifest (if any) is unchanged.
    """
    body = _ENCODER.encode(manifest)
    data = b'{"manifest":' + body + b',"crc32":' + str(zlib.crc32(body)).encode() + b"}\n"
    path = directory / MANIFEST_FILE
    tmp = path.with_name(path.name + TMP_SUFFIX)
    _fileio.write_file(tmp, data)
    _fileio.rename(tmp, path)
    _fileio.fsync_dir(directory)
