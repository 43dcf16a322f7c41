"""Named positions of a log's readers: how far each durable subscription has acknowledged.

One small file per name in ``<log directory>/subscriptions/``: ``NAME.pos`` holding
``{"acked": SEQ, "crc32": ...}`` (the CRC-32 of the decimal ``SEQ``). It is replaced
atomically and durably (written to ``NAME.pos.tmp``, fsynced, renamed, directory fsynced), so
after a crash it holds the last acknowledgement that returned, or an earlier one, never a
torn one. Retention keeps every record after the lowest acknowledged seq.
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path
from typing import Final

import msgspec

from storage import _fileio
from storage._format import TMP_SUFFIX
from storage.errors import CorruptLog

__all__ = ["POSITIONS_DIR", "Positions", "read_positions"]

POSITIONS_DIR: Final = "subscriptions"
POSITION_SUFFIX: Final = ".pos"


class _Stored(msgspec.Struct, frozen=True):
    acked: int
    crc32: int


_DECODER: Final = msgspec.json.Decoder(_Stored)


class Positions:
    """The named positions of one log directory, loaded at open and kept in memory."""

    def __init__(self, directory: Path) -> None:
        """Read every position (``CorruptLog`` names a damaged file)."""
        self.directory = directory / POSITIONS_DIR
        self._lock = threading.Lock()
        self._acked: dict[str, int] = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if path.name.endswith(POSITION_SUFFIX + TMP_SUFFIX):
                    _fileio.remove(path)  # a write a crash cut short: the old file holds
                elif path.name.endswith(POSITION_SUFFIX):
                    self._acked[path.name[: -len(POSITION_SUFFIX)]] = _read(path)

    def get(self, name: str) -> int | None:
        """The last seq ``name`` acknowledged, or None if it has no position."""
        with self._lock:
            return self._acked.get(name)

    def all(self) -> dict[str, int]:
        """Every name's last acknowledged seq."""
        with self._lock:
            return dict(self._acked)

    def lowest_needed(self) -> int | None:
        """The first seq some named reader still needs (its acked seq + 1), or None."""
        with self._lock:
            return min(self._acked.values()) + 1 if self._acked else None

    def set(self, name: str, acked: int) -> None:
        """Record durably that ``name`` has acknowledged every seq up to ``acked``.

        Raises:
            OSError: It could not be written; the previous position still holds.
        """
        with self._lock:
            if not self.directory.exists():
                _fileio.make_dirs(self.directory)
            path = self.directory / (name + POSITION_SUFFIX)
            tmp = path.with_name(path.name + TMP_SUFFIX)
            text = str(acked).encode()
            data = b'{"acked":' + text + b',"crc32":' + str(zlib.crc32(text)).encode() + b"}\n"
            _fileio.write_file(tmp, data)
            _fileio.rename(tmp, path)
            _fileio.fsync_dir(self.directory)
            self._acked[name] = acked

    def remove(self, name: str) -> bool:
        """Forget ``name``'s position (retention stops waiting for it); whether it had one."""
        with self._lock:
            if name not in self._acked:
                return False
            _fileio.remove(self.directory / (name + POSITION_SUFFIX))
            _fileio.fsync_dir(self.directory)
            del self._acked[name]
            return True


def read_positions(directory: Path) -> dict[str, int]:
    """Every named position of the log in ``directory``, read only (for inspection).

    Unlike :class:`Positions`, removes nothing (a writer may be replacing a file); a file
    that cannot be read is ``CorruptLog``.
    """
    folder = directory / POSITIONS_DIR
    if not folder.is_dir():
        return {}
    return {
        path.name[: -len(POSITION_SUFFIX)]: _read(path)
        for path in sorted(folder.iterdir())
        if path.name.endswith(POSITION_SUFFIX)
    }


def _read(path: Path) -> int:
    try:
        stored = _DECODER.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise CorruptLog(path, 0, f"the subscription position is not readable ({exc})") from exc
    if zlib.crc32(str(stored.acked).encode()) != stored.crc32 or stored.acked < 0:
        raise CorruptLog(path, 0, "the subscription position's checksum does not match")
    return stored.acked
