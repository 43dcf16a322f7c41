"""Where logs are shipped: an object store interface, a local-directory one, and how to pick.

An archive is a flat namespace of immutable-once-committed objects (``/``-separated names),
as S3 is. What actorkv needs of it is five calls: ``put`` (optionally conditional, for the
writer's lease: create-only, or replace-only-if-unchanged), ``get``, ``head``, ``list`` and
``delete``. ``FileArchive`` keeps objects as files under a directory (a mounted disk, a test);
``storage.s3archive.S3Archive`` keeps them in a bucket. ``open_archive`` turns
``"s3://bucket/prefix"``, ``"file:///some/dir"`` or an object implementing :class:`Archive`
into an archive.

What is shipped and how a restore trusts it is in ``storage/shipping.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from storage import _fileio
from storage.errors import ArchiveError, ArchivePreconditionFailed, InvalidOption

logger = logging.getLogger("actorkv.archive")

__all__ = [
    "Archive",
    "ArchiveError",
    "ArchivePreconditionFailed",
    "FileArchive",
    "get_with_retries",
    "open_archive",
]


@runtime_checkable
class Archive(Protocol):
    """An object store. Names are ``/``-separated; ``etag`` identifies one version."""

    def put(
        self, name: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Store ``data`` under ``name``; returns its etag.

        ``if_none_match``: only if no such object exists; ``if_match``: only if its current
        etag is this. Either failing raises ``ArchivePreconditionFailed``.
        """
        ...

    def get(self, name: str) -> bytes:
        """The object's bytes (``ArchiveError`` if it does not exist)."""
        ...

    def head(self, name: str) -> str | None:
        """The object's etag, or None if it does not exist."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Names starting with ``prefix``, sorted."""
        ...

    def delete(self, name: str) -> None:
        """Remove the object (no error if it does not exist)."""
        ...


class FileArchive:
    """An archive in a local directory: one file per object, written atomically.

    A put writes a temporary file, fsyncs it, renames it into place and fsyncs the
    directory, so an object is there whole or not at all. Conditional puts are checked and
    done under a lock file's exclusive create, so two processes cannot both win one.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Use (and create) ``root``."""
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the archive directory {self.root}: {exc}"
            raise ArchiveError(msg) from exc

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(part in ("", ".", "..") for part in parts):
            msg = f"bad archive object name {name!r}"
            raise ArchiveError(msg)
        return self.root.joinpath(*parts)

    def put(
        self, name: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Store ``data`` under ``name`` (see :class:`Archive`)."""
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if if_none_match or if_match is not None:
                return self._put_conditionally(path, data, if_none_match, if_match)
            self._write(path, data)
        except OSError as exc:
            msg = f"cannot write archive object {name!r} under {self.root}: {exc}"
            raise ArchiveError(msg) from exc
        return _etag(data)

    def _put_conditionally(
        self, path: Path, data: bytes, if_none_match: bool, if_match: str | None
    ) -> str:
        guard = path.with_name(path.name + ".lock")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError as exc:
            msg = f"{path.name}: another writer is changing it right now"
            raise ArchivePreconditionFailed(msg) from exc
        try:
            os.close(fd)
            current = _etag(path.read_bytes()) if path.exists() else None
            if if_none_match and current is not None:
                msg = f"{path.name} exists"
                raise ArchivePreconditionFailed(msg)
            if if_match is not None and current != if_match:
                msg = f"{path.name} changed (etag {current}, expected {if_match})"
                raise ArchivePreconditionFailed(msg)
            self._write(path, data)
            return _etag(data)
        finally:
            guard.unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.unlink(missing_ok=True)
        _fileio.write_file(temporary, data)
        _fileio.rename(temporary, path)
        _fileio.fsync_dir(path.parent)

    def get(self, name: str) -> bytes:
        """The object's bytes (see :class:`Archive`)."""
        try:
            return self._path(name).read_bytes()
        except OSError as exc:
            msg = f"cannot read archive object {name!r} under {self.root}: {exc}"
            raise ArchiveError(msg) from exc

    def head(self, name: str) -> str | None:
        """The object's etag, or None."""
        path = self._path(name)
        try:
            return _etag(path.read_bytes()) if path.is_file() else None
        except OSError as exc:
            msg = f"cannot read archive object {name!r} under {self.root}: {exc}"
            raise ArchiveError(msg) from exc

    def list(self, prefix: str) -> list[str]:
        """Names starting with ``prefix``, sorted (temporary and lock files left out)."""
        found = []
        for path in self.root.rglob("*"):
            if not path.is_file() or path.name.startswith(".") or path.name.endswith(".lock"):
                continue
            name = path.relative_to(self.root).as_posix()
            if name.startswith(prefix):
                found.append(name)
        return sorted(found)

    def delete(self, name: str) -> None:
        """Remove the object, if it exists."""
        try:
            self._path(name).unlink(missing_ok=True)
        except OSError as exc:
            msg = f"cannot delete archive object {name!r} under {self.root}: {exc}"
            raise ArchiveError(msg) from exc

    def __repr__(self) -> str:
        return f"FileArchive({str(self.root)!r})"


def get_with_retries(archive: Archive, name: str, attempts: int = 5, pause: float = 0.1) -> bytes:
    """``archive.get``, tried again after a failure (a dropped connection, a cut body).

    The pause doubles after each failure; the last failure is raised.
    """
    for attempt in range(attempts - 1):
        try:
            return archive.get(name)
        except ArchiveError as exc:
            logger.warning("reading %s failed (try %d of %d): %s", name, attempt + 1, attempts, exc)
            time.sleep(pause * 2**attempt)
    return archive.get(name)


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def open_archive(spec: Any, **options: Any) -> Archive:
    """An archive from ``"s3://bucket/prefix"``, ``"file:///dir"`` or an :class:`Archive`.

    ``options`` go to :class:`storage.s3archive.S3Archive` (``endpoint_url``,
    ``client``, boto3 client options).

    Raises:
        InvalidOption: ``spec`` is none of those, or options were given for a directory.
    """
    if isinstance(spec, Archive) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, str):
        msg = f"archive must be 's3://bucket/prefix', 'file:///dir' or an Archive, got {spec!r:.60}"
        raise InvalidOption(msg)
    url = urlparse(spec)
    if url.scheme == "file":
        if options:
            msg = f"a file:// archive takes no options, got {sorted(options)}"
            raise InvalidOption(msg)
        if url.netloc not in ("", "localhost"):
            msg = f"a file:// archive is a local directory; got host {url.netloc!r} in {spec!r}"
            raise InvalidOption(msg)
        return FileArchive(unquote(url.path))
    if url.scheme == "s3":
        from storage.s3archive import S3Archive  # noqa: PLC0415  # boto3 only when asked

        if not url.netloc:
            msg = f"an s3:// archive needs a bucket: s3://bucket/prefix, got {spec!r}"
            raise InvalidOption(msg)
        return S3Archive(url.netloc, url.path.strip("/"), **options)
    msg = f"archive must be 's3://bucket/prefix' or 'file:///dir', got {spec!r}"
    raise InvalidOption(msg)
