"""Forking a key space: a new key space holding another's state as of a past point.

The fork is written whole under a temporary name, then renamed into place: a snapshot of
the state at seq S (entries with their versions and seqs, so compare-and-set clients see
what they would have seen in the source), an empty first segment starting at S + 1 (the
fork's own history starts there), and a manifest listing the snapshot. Every file and
directory entry is fsynced before the rename and the parent after it, so a crash leaves
either no fork or a complete one; a leftover temporary directory is deleted at the next
open of the store. The source is only read.
"""

from __future__ import annotations

import os
import shutil
import time as clocks
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from actors._drop import remove_leftovers
from storage import _fileio
from storage._format import FORMAT_VERSION
from storage._segment import create_segment
from storage.kv_snapshot import SCHEMA_DECODED_SCALARS, SCHEMA_HAS_TTL, encode_chunks
from storage.kvstate import Entry
from storage.manifest import ListedSnapshot, Manifest, write_manifest
from storage.snapshot import KIND_KEYSPACE, write_snapshot

__all__ = ["FORKING_PREFIX", "finish_forks", "write_fork"]

FORKING_PREFIX = ".forking-"  # a fork being written; deleted by the next open if left over


def write_fork(
    folder: Path,
    seq: int,
    items: Iterable[tuple[Any, Entry]],
    *,
    key_type: Literal["str", "bytes", "tuple"],
    decode_scalars: bool,
    time: float,
    keyed: bool = False,
) -> None:
    """Write a key space at ``folder`` holding ``items`` as the state of record ``seq``.

    ``time`` is record ``seq``'s commit time in the source: the fork's point keeps it, and
    the fork's own records never go back from it. The fork starts a hash chain of its own
    (keyed like the store's logs when ``keyed``): its anchors prove its history from the
    point on; what came before is the source's.

    Raises:
        OSError: Something could not be written; nothing is left under ``folder``'s name.
    """
    keys: list[Any] = []
    entries: list[Entry] = []
    for key, entry in items:
        keys.append(key)
        entries.append(entry)
    tmp = folder.with_name(f"{FORKING_PREFIX}{folder.name}-{os.getpid()}-{clocks.monotonic_ns()}")
    _fileio.make_dirs(tmp)
    try:
        listed: tuple[ListedSnapshot, ...] = ()
        if seq > 0:
            has_ttl = any(entry.expires_at is not None for entry in entries)
            schema = (SCHEMA_DECODED_SCALARS if decode_scalars else 0) | (
                SCHEMA_HAS_TTL if has_ttl else 0
            )
            info = write_snapshot(tmp, seq, KIND_KEYSPACE, schema, encode_chunks(keys, entries))
            listed = (ListedSnapshot(seq, info.path.name, info.bytes, info.items),)
        create_segment(tmp, seq + 1, 0, time=time, keyed=keyed)
        manifest = Manifest(
            format_version=FORMAT_VERSION, kind="keyspace", key_type=key_type, snapshots=listed
        )
        write_manifest(tmp, manifest)
        _fileio.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fileio.fsync_dir(folder.parent)


def finish_forks(folder: Path) -> None:
    """Delete forks a crash cut short (they never got their name)."""
    remove_leftovers(folder, FORKING_PREFIX)
