"""Fault injection and simulated power loss at the ``storage._fileio`` seam.

Every write, fsync, open, rename and truncate the engine performs is a call to a function of
``storage._fileio`` looked up at call time (``_fileio.fsync(fd)``), so replacing attributes of
that module intercepts all of them. Two tools build on that:

- :class:`FaultInjector` makes the Nth call of one operation fail with an errno, once
  (transient) or from then on (persistent); for ``write_all`` it can first write half the
  bytes for real, the way ENOSPC strikes in the middle of a batch.
- :class:`DurabilityTracker` records what an fsync made durable: per file, its length at the
  last successful ``fsync``, and whether its directory entry survived a ``fsync_dir``.
  :meth:`DurabilityTracker.crash` then plays a power loss on the files as they lie on disk
  (call :meth:`DurabilityTracker.cut_power` first to lose what closing the log would sync).

Both are context managers that patch the module on enter and restore it on exit; they nest
(the inner one wraps whatever the outer one installed). Counting starts at install time, so
install a fault after opening a log to aim at the calls of one append.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from storage import _fileio

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["OPERATIONS", "DurabilityTracker", "FaultInjector", "FsyncGate"]

OPERATIONS = (
    "create",
    "fsync",
    "fsync_dir",
    "make_dir",
    "open_append",
    "open_read",
    "open_write",
    "remove",
    "rename",
    "truncate",
    "write_all",
)
"""The ``storage._fileio`` functions that can be made to fail."""


class _Patch:
    """Replace attributes of ``storage._fileio``; restore them in reverse on exit."""

    def __init__(self) -> None:
        self._saved: list[tuple[str, Any]] = []

    def _wrap(self, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(_fileio, name)
        self._saved.append((name, original))
        setattr(_fileio, name, make(original))

    def uninstall(self) -> None:
        while self._saved:
            name, original = self._saved.pop()
            setattr(_fileio, name, original)

    def __enter__(self) -> Self:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstall()

    def install(self) -> Self:
        raise NotImplementedError


class FaultInjector(_Patch):
    """Fail the ``nth`` call (1-based, counted from install) of one ``_fileio`` operation.

    Args:
        operation: One of :data:`OPERATIONS`.
        nth: Which call fails first.
        error: The errno of the ``OSError`` raised (``errno.EIO``, ``errno.ENOSPC``, ...).
        persistent: Fail every call from the ``nth`` on, not only the ``nth``.
        partial: ``write_all`` only: write the first half of the bytes for real, then raise.

    Attributes:
        calls: How many calls of ``operation`` were seen since install.
        injected: How many of them were made to fail.
    """

    def __init__(
        self,
        operation: str,
        nth: int = 1,
        error: int = errno.EIO,
        *,
        persistent: bool = False,
        partial: bool = False,
    ) -> None:
        super().__init__()
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; pick one of {OPERATIONS}")
        if nth < 1:
            raise ValueError(f"nth counts from 1, got {nth}")
        if partial and operation != "write_all":
            raise ValueError("partial=True only makes sense for write_all")
        self.operation = operation
        self.nth = nth
        self.error = error
        self.persistent = persistent
        self.partial = partial
        self.calls = 0
        self.injected = 0
        self._cleared = False
        self._mutex = threading.Lock()  # the interval syncer calls fsync from its thread

    def clear(self) -> None:
        """Stop failing: every later call goes through (the disk was "fixed")."""
        with self._mutex:
            self._cleared = True

    def _fails_now(self) -> bool:
        with self._mutex:
            self.calls += 1
            hit = self.calls == self.nth or (self.persistent and self.calls > self.nth)
            if hit and not self._cleared:
                self.injected += 1
                return True
            return False

    def _oserror(self) -> OSError:
        return OSError(self.error, f"injected: {os.strerror(self.error)} in {self.operation}")

    def install(self) -> Self:
        """Patch ``storage._fileio``; returns self."""

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def faulty(*args: Any) -> Any:
                if not self._fails_now():
                    return original(*args)
                if self.partial:
                    fd, data = args
                    original(fd, bytes(data[: len(data) // 2]))
                raise self._oserror()

            return faulty

        self._wrap(self.operation, make)
        return self


class FsyncGate:
    """Stands in for ``_fileio.fsync``: every call waits until :attr:`release` is set.

    Holds a writer inside its fsync so a test can look at what readers see meanwhile, or let
    the next group queue up behind it. :attr:`entered` is set by the first call; a call that
    waits longer than ``timeout`` fails, so a test that forgets to release cannot hang.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.real = _fileio.fsync  # captured before the test patches it in
        self.timeout = timeout
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        if not self.release.wait(self.timeout):
            msg = "the test never released fsync"
            raise AssertionError(msg)
        self.real(fd)


@dataclass
class _FileState:
    synced: int
    """Length at the last successful fsync (what survives a power loss)."""
    entry_durable: bool
    """Whether the directory entry was made durable by an fsync_dir after its creation."""


@dataclass
class _Rename:
    """A rename whose directory entry is not durable yet: a power loss undoes it."""

    src: Path
    dst: Path
    src_state: _FileState | None
    """The source file's state (None for a directory)."""
    src_durable: bool
    """Whether the source's own entry was durable (else undoing deletes the target)."""
    replaced: bytes | None
    """The durable bytes of a file the rename replaced, brought back on undo."""


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(path).resolve()


def _under(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


class DurabilityTracker(_Patch):
    """Record what the engine made durable, and simulate a power loss with :meth:`crash`.

    The model, per file and directory seen through the seam (others are left alone):

    - a file's data survives up to its length at the last successful ``fsync`` of any
      descriptor;
    - a file or directory created (``create``, ``make_dir``) survives only if an
      ``fsync_dir`` of its parent followed; a directory that does not survive takes
      everything in it along;
    - a rename whose parent directory was not fsynced afterwards is undone: the source comes
      back under its old name (if its own entry was durable; else it is gone), and a file
      the rename replaced comes back with its durable bytes;
    - removed files stay removed.

    Directories made without the seam (a plain ``mkdir``) are caught too when ``root`` is
    given: any directory under it that did not exist at install time and was not listed by
    an ``fsync_dir`` of its parent is lost in a crash.

    Call :meth:`crash` only while no log is open on the files (close it first).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.files: dict[Path, _FileState] = {}
        self.dirs: dict[Path, bool] = {}
        """Directories created after install, and whether their entry is durable."""
        self.root = None if root is None else _real(root)
        self._baseline: set[Path] = set()
        self._renames: list[_Rename] = []
        self._fd_paths: dict[int, Path] = {}
        self._power_cut = False
        self._mutex = threading.Lock()

    def cut_power(self) -> None:
        """Lose power now: nothing made durable from here until :meth:`crash` counts.

        The log cannot be closed without its final fsync, so a test that wants a power
        loss right after an acknowledgment calls this, closes the log, then calls
        :meth:`crash`.
        """
        with self._mutex:
            self._power_cut = True

    def assume_durable(self, directory: str | os.PathLike[str]) -> None:
        """Treat every regular file now in ``directory`` as fully durable."""
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False):
                with self._mutex:
                    self.files[_real(entry.path)] = _FileState(entry.stat().st_size, True)

    def synced_length(self, path: str | os.PathLike[str]) -> int | None:
        """The length of ``path`` that survives a crash, or None if it would vanish."""
        real = _real(path)
        state = self.files.get(real)
        if state is None or not state.entry_durable or not self._dirs_durable(real):
            return None
        return state.synced

    def _dirs_durable(self, path: Path) -> bool:
        return all(self.dirs.get(parent, True) for parent in path.parents)

    def _path_of(self, fd: int) -> Path | None:
        try:
            target = Path(f"/proc/self/fd/{fd}").readlink()
        except OSError:
            return self._fd_paths.get(fd)
        return None if target.name.endswith(" (deleted)") else target

    def install(self) -> Self:
        """Patch ``storage._fileio``; returns self."""
        if self.root is not None and self.root.exists():
            self._baseline = {self.root, *(p for p in self.root.rglob("*") if p.is_dir())}
        for name in ("create", "open_append", "open_write", "open_read"):
            self._wrap(name, self._opener(name))
        self._wrap("fsync", self._fsync)
        self._wrap("fsync_dir", self._fsync_dir)
        self._wrap("make_dir", self._make_dir)
        self._wrap("rename", self._rename)
        self._wrap("remove", self._remove)
        return self

    def _opener(self, name: str) -> Callable[[Any], Any]:
        def make(original: Callable[[Path], int]) -> Callable[[Path], int]:
            def opened(path: Path) -> int:
                real = _real(path)
                existed = real.exists()
                fd = original(path)
                with self._mutex:
                    self._fd_paths[fd] = real
                    state = self.files.get(real)
                    if state is None:
                        # A file that predates the tracker is taken as durable as it is.
                        size = 0 if name == "create" else os.fstat(fd).st_size
                        self.files[real] = _FileState(size, existed)
                    elif name == "create":
                        state.synced = 0  # O_TRUNC: the old bytes are gone
                return fd

            return opened

        return make

    def _fsync(self, original: Callable[[int], None]) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            original(fd)
            path = self._path_of(fd)
            if path is None or self._power_cut:
                return
            size = os.fstat(fd).st_size
            with self._mutex:
                state = self.files.setdefault(path, _FileState(0, True))
                state.synced = size

        return fsync

    def _fsync_dir(self, original: Callable[[Path], None]) -> Callable[[Path], None]:
        def fsync_dir(path: Path) -> None:
            original(path)
            real = _real(path)
            with self._mutex:
                if self._power_cut:
                    return
                for file, state in self.files.items():
                    if file.parent == real:
                        state.entry_durable = True
                for child in real.iterdir():  # whatever made them, listed now: durable
                    if child.is_dir() and not child.is_symlink():
                        self.dirs[child] = True
                self._renames = [r for r in self._renames if r.dst.parent != real]

        return fsync_dir

    def _make_dir(self, original: Callable[[Path], None]) -> Callable[[Path], None]:
        def make_dir(path: Path) -> None:
            original(path)
            with self._mutex:
                self.dirs[_real(path)] = False

        return make_dir

    def _rename(self, original: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
        def rename(src: Path, dst: Path) -> None:
            real_src, real_dst = _real(src), _real(dst)
            with self._mutex:
                replaced = None
                old = self.files.get(real_dst)
                if real_dst.is_file():
                    old = old or _FileState(real_dst.stat().st_size, True)
                    if old.entry_durable:
                        replaced = real_dst.read_bytes()[: old.synced]
            original(src, dst)
            with self._mutex:
                if real_dst.is_dir():
                    src_durable = self.dirs.pop(real_src, True)
                    self.dirs[real_dst] = False
                    self._move_tracked(real_src, real_dst)
                    record = _Rename(real_src, real_dst, None, src_durable, replaced)
                else:
                    state = self.files.pop(real_src, None)
                    synced = state.synced if state is not None else real_dst.stat().st_size
                    self.files[real_dst] = _FileState(synced, False)
                    src_durable = state.entry_durable if state is not None else True
                    record = _Rename(real_src, real_dst, state, src_durable, replaced)
                self._renames.append(record)

        return rename

    def _move_tracked(self, src: Path, dst: Path) -> None:
        """Re-key what is tracked under directory ``src`` to ``dst`` (it was renamed)."""
        for table in (self.files, self.dirs):
            for path in [path for path in table if src in path.parents]:
                table[dst / path.relative_to(src)] = table.pop(path)

    def _remove(self, original: Callable[[Path], None]) -> Callable[[Path], None]:
        def remove(path: Path) -> None:
            original(path)
            with self._mutex:
                self.files.pop(_real(path), None)

        return remove

    def crash(
        self,
        keep: Callable[[Path, int, int], int] | None = None,
        *,
        zero_fill: bool = False,
    ) -> dict[Path, int | None]:
        """Simulate a power loss on every tracked file; returns path -> new length or None.

        Undone first: renames that were not made durable (newest first), then directories
        whose creation was not durable (with what they hold). Then every file is cut.

        Args:
            keep: ``keep(path, synced, size)`` picks how many bytes of a file survive,
                clamped to ``[synced, size]``: unsynced bytes may or may not have reached
                the disk. Default: exactly the synced bytes.
            zero_fill: Keep the file's length but zero the bytes past the surviving ones, as
                a file system that allocated blocks but never wrote them would.
        """
        outcome: dict[Path, int | None] = {}
        with self._mutex:
            for rename in reversed(self._renames):
                self._undo(rename, outcome)
            self._renames.clear()
            if self.root is not None and self.root.exists():
                for directory in self.root.rglob("*"):
                    if directory.is_dir() and directory not in self._baseline:
                        self.dirs.setdefault(directory, False)  # made without the seam
            for directory in sorted(self.dirs, key=lambda d: len(d.parts)):
                if not self.dirs.get(directory, True) and directory.exists():
                    self._lose_tree(directory, outcome)
            for path, state in list(self.files.items()):
                if not path.exists():
                    del self.files[path]
                    continue
                if not state.entry_durable:
                    path.unlink()
                    del self.files[path]
                    outcome[path] = None
                    continue
                size = path.stat().st_size
                low = min(state.synced, size)
                survive = low if keep is None else max(low, min(size, keep(path, low, size)))
                with path.open("r+b") as file:
                    if zero_fill:
                        file.seek(survive)
                        file.write(bytes(size - survive))
                    else:
                        file.truncate(survive)
                new_size = path.stat().st_size
                state.synced = new_size
                outcome[path] = new_size
            self.dirs = {d: True for d in self.dirs if d.exists()}
            self._baseline |= set(self.dirs)
            self._fd_paths.clear()
            self._power_cut = False
        return outcome

    def _undo(self, rename: _Rename, outcome: dict[Path, int | None]) -> None:
        src, dst = rename.src, rename.dst
        if not dst.exists():
            return
        if dst.is_dir():
            if rename.src_durable:
                dst.rename(src)
                self.dirs.pop(dst, None)
                self._move_tracked(dst, src)
            else:
                self._lose_tree(dst, outcome)
        else:
            self.files.pop(dst, None)
            if rename.src_durable:
                size = dst.stat().st_size
                dst.rename(src)
                self.files[src] = rename.src_state or _FileState(size, True)
            else:
                dst.unlink()
                outcome[dst] = None
        if rename.replaced is not None:
            dst.write_bytes(rename.replaced)
            self.files[dst] = _FileState(len(rename.replaced), True)
            outcome[dst] = len(rename.replaced)

    def _lose_tree(self, directory: Path, outcome: dict[Path, int | None]) -> None:
        shutil.rmtree(directory)
        for table in (self.files, self.dirs):
            for path in [path for path in table if _under(path, directory)]:
                del table[path]
                if table is self.files:
                    outcome[path] = None
