"""How the ``actorkv`` commands print: rich tables for people, JSON for programs.

Progress bars and spinners go to stderr, and only when it is a terminal: piped or
captured output is never mixed with them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from actors._history import Version
from actors._inspect import LogInfo, ReadOnlyLog
from storage.archive import open_archive
from storage.kvstate import Entry
from storage.shipping import read_uploads

_ENCODER = msgspec.json.Encoder(enc_hook=str, order="deterministic")


def _stdout() -> Console:
    return Console(soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """``actorkv: MESSAGE`` on stderr."""
    _stderr().print(Text("actorkv: ", style="bold red") + Text(message))


def note(message: str) -> None:
    """``actorkv: note: MESSAGE`` on stderr (what a reader should know about the answer)."""
    _stderr().print(Text("actorkv: note: ", style="yellow") + Text(message))


def json_text(value: Any) -> str:
    """``value`` as one line of JSON (bytes as base64, anything else unknown as str)."""
    return _ENCODER.encode(value).decode()


def line(value: Any) -> None:
    """Print ``value`` as a line of JSON."""
    sys.stdout.write(json_text(value) + "\n")


def show_json(value: Any) -> None:
    sys.stdout.write(json_text(value) + "\n")


@contextlib.contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal's stderr; yields ``advance(n)``."""
    if not sys.stderr.isatty():
        yield lambda _: None
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_stderr(),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def spinner(label: str) -> Iterator[None]:
    """A spinner on a terminal's stderr while something of unknown length runs."""
    if not sys.stderr.isatty():
        yield
        return
    with _stderr().status(label):
        yield


def _when(seconds: float) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json_text(value)


# -- inspect ----------------------------------------------------------------------------------


def archived_seqs(url: str, store: Path, logs: list[ReadOnlyLog]) -> dict[str, int]:
    """The last seq the archive at ``url`` holds of each log (by its path)."""
    archive = open_archive(url)
    found = {}
    for log in logs:
        prefix = log.path.relative_to(store).as_posix() + "/"
        uploads = read_uploads(archive, prefix)
        found[str(log.path)] = max(
            (upload.last_seq for upload in uploads if upload.kind != "snapshot"), default=0
        )
    return found


def show_inspect(store: Path, infos: list[LogInfo], as_json: bool) -> None:
    if as_json:
        show_json({"store": str(store), "logs": infos})
        return
    table = Table(title=f"{store}", title_justify="left")
    for column in ("kind", "name", "records", "seqs", "bytes", "snapshots", "floor", "last write"):
        table.add_column(column, justify="right" if column in ("records", "bytes") else "left")
    for info in infos:
        table.add_row(
            info.kind,
            info.name,
            f"{info.records:,}",
            f"{info.first_seq}..{info.last_seq}",
            f"{info.bytes:,}",
            ", ".join(map(str, info.snapshots)) or "-",
            str(info.history_floor),
            _when(info.last_time),
        )
    console = _stdout()
    console.print(table)
    for info in infos:
        console.print(Text(f"{info.kind} {info.name}: " + "; ".join(_details(info))))


def _details(info: LogInfo) -> list[str]:
    said = [f"head {info.last_seq}:{info.chain_head[:16]}..."]
    if info.key_type not in (None, "str"):
        said.append(f"{info.key_type} keys")
    if info.actor_class:
        said.append(f"class {info.actor_class}")
    if info.indexes:
        said.append("indexes " + ", ".join(info.indexes))
    if info.subscribers:
        said.append("subscribers " + ", ".join(f"{k} at {v}" for k, v in info.subscribers.items()))
    if info.archived_seq is not None:
        behind = info.last_seq - info.archived_seq
        said.append(f"archived to {info.archived_seq} ({behind} behind)")
    if info.torn_tail:
        said.append(f"torn tail: {info.torn_tail}")
    if info.damage:
        said.append(f"DAMAGE: {info.damage}")
    return said


# -- reads ------------------------------------------------------------------------------------


def _entry(key: Any, value: Any, entry: Entry) -> dict[str, Any]:
    found = {"key": key, "value": value, "version": entry.version, "seq": entry.seq}
    if entry.expires_at is not None:
        found["expires_at"] = entry.expires_at
    return found


def show_entry(key: Any, value: Any, entry: Entry, as_json: bool) -> None:
    if as_json:
        show_json(_entry(key, value, entry))
        return
    expiry = "" if entry.expires_at is None else f", expires {_when(entry.expires_at)}"
    sys.stdout.write(f"{_text(value)}\n")
    _stderr().print(Text(f"version {entry.version}, seq {entry.seq}{expiry}"))


def show_rows(name: str, seq: int, rows: list[tuple[Any, Any, Entry]], as_json: bool) -> None:
    if as_json:
        show_json({"seq": seq, "rows": [_entry(*row) for row in rows]})
        return
    table = Table(title=f"{name} at seq {seq}: {len(rows)} keys", title_justify="left")
    for column in ("key", "value", "version", "seq"):
        table.add_column(column)
    for key, value, entry in rows:
        table.add_row(Text(_text(key)), Text(_text(value)), str(entry.version), str(entry.seq))
    _stdout().print(table)


def show_history(key: Any, versions: list[Version], as_json: bool) -> None:
    if as_json:
        show_json({"key": key, "versions": versions})
        return
    table = Table(title=f"{_text(key)}: {len(versions)} changes", title_justify="left")
    for column in ("seq", "time", "op", "version", "value"):
        table.add_column(column)
    for version in versions:
        value = "" if version.op != "put" else _text(version.value)
        table.add_row(
            str(version.seq), _when(version.time), version.op, str(version.version), value
        )
    _stdout().print(table)


def show_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    _stdout().print(table)


def say(message: str) -> None:
    """A sentence for people (stdout)."""
    _stdout().print(Text(message))
