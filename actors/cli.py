"""The ``actorkv`` command line: inspect, read, verify, repair and follow a store.

Read-only commands (``inspect``, ``dump``, ``get``, ``scan``, ``history``, ``tail``,
``verify``, ``anchor``) never open the store: they read its files as they are
(``actors/_inspect.py``), so they work while another process has it open for writing, up to
the last complete record. ``repair``, ``snapshot`` and ``compact`` open it and need it
closed elsewhere. Every command takes ``--json`` for a machine-readable answer; ``dump`` and
``tail`` always print JSON lines. Exit status: 0 success, 1 failure (for ``verify``: a
corrupt log), 2 bad usage (for ``verify``: only a torn tail), 3 (``verify``) a log that does
not extend its anchor. See ``docs/cli.md``.

Other commands come from installed packages (the ``actorkv.commands`` entry points): the
benchmarking suite adds ``actorkv bench``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from actors import _cli_admin
from actors import _cli_output as out
from actors._demo import demo
from actors._inspect import ReadOnlyLog, find_logs, log_info, parse_point
from storage.codec import Batch, Delete, Expired, Put
from storage.errors import ActorKVError
from storage.kvstate import Entry, KVState

__all__ = ["demo", "main"]

TAIL_POLL = 0.25  # seconds between looks at the log under tail -f

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
at_option = click.option(
    "--at", "point", metavar="SEQ|TIME", help="As of a seq, epoch seconds or ISO 8601 time."
)
store_argument = click.argument(
    "store", type=click.Path(exists=True, file_okay=False, path_type=Path)
)


class _Commands(click.Group):
    """The built-in commands, and those installed packages register (``actorkv.commands``)."""

    def _installed(self) -> dict[str, Any]:
        return {point.name: point for point in entry_points(group="actorkv.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._installed()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        point = self._installed().get(cmd_name)
        if point is None:
            return None
        loaded: click.Command = point.load()
        return loaded


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Inspect, verify, repair and follow actorkv stores."""


def _fail(error: ActorKVError | str, status: int = 1) -> NoReturn:
    out.error(str(error))
    sys.exit(status)


def _log(store: Path, name: str) -> ReadOnlyLog:
    """The key space (or, failing that, actor) ``name``; ``actors/NAME`` picks the actor."""
    if name.startswith(("keyspaces/", "actors/")):
        folder, _, name = name.partition("/")
        return ReadOnlyLog(store, "keyspace" if folder == "keyspaces" else "actor", name)
    if (store / "keyspaces" / name).is_dir() or not (store / "actors" / name).is_dir():
        return ReadOnlyLog(store, "keyspace", name)
    return ReadOnlyLog(store, "actor", name)


def _said_how_far(log: ReadOnlyLog) -> ReadOnlyLog:
    """Say on stderr when the log ends in an incomplete record (read up to the one before)."""
    torn = log.log.torn_tail
    if torn is not None:
        out.note(
            f"{log.name}: read up to seq {log.log.last_seq}; the {torn.bytes_after} bytes after "
            "it are not a complete record yet (a write in progress, or a torn write the next "
            "open cuts)"
        )
    return log


def _seq_of(log: ReadOnlyLog, point: str | None) -> int | None:
    if point is None:
        return None
    seq, when = parse_point(point)
    return seq if when is None else log.log.seq_at(when)


def _state_at(log: ReadOnlyLog, point: str | None) -> tuple[KVState, float]:
    """The key space's state at ``point`` (None: now), and the time expiry is judged at.

    As ``ks.at()``: the time asked for, the commit time of the seq asked for, or now.
    """
    seq, when = (None, None) if point is None else parse_point(point)
    if when is not None:
        seq = log.log.seq_at(when)
    with out.spinner(f"rebuilding {log.name} from its snapshot and log"):
        state = log.state(seq)
    if when is not None:
        return state, when
    return state, time.time() if seq is None else log.log.time_of(seq) if seq else 0.0


def _parse_key(log: ReadOnlyLog, text: str) -> Any:
    """A key as typed: text; ``0x``-hex or text for bytes keys; a JSON array for tuples."""
    if log.key_type == "tuple":
        try:
            parsed = msgspec.json.decode(text)
        except msgspec.DecodeError:
            parsed = None
        if not isinstance(parsed, list):
            _fail(f"{log.name} has tuple keys: give the key as a JSON array, like '[\"a\", 1]'", 2)
        return tuple(parsed)
    if log.key_type == "bytes":
        if text.startswith("0x"):
            try:
                return bytes.fromhex(text[2:])
            except ValueError:
                _fail(f"{text!r} is not 0x followed by hex digits", 2)
        return text.encode()
    return text


# -- what is in a store -----------------------------------------------------------------------


@main.command()
@store_argument
@click.option("--archive", metavar="URL", help="Also say how far each log is shipped there.")
@json_option
def inspect(store: Path, archive: str | None, as_json: bool) -> None:
    """Key spaces and actors of STORE: records, seqs, bytes, snapshots, heads, subscribers."""
    try:
        logs = [ReadOnlyLog(store, kind, name) for kind, name, _ in find_logs(store)]
        shipped = out.archived_seqs(archive, store, logs) if archive else {}
        infos = [log_info(log, shipped.get(str(log.path))) for log in logs]
    except ActorKVError as exc:
        _fail(exc)
    out.show_inspect(store, infos, as_json)


@main.command()
@store_argument
@click.argument("name")
@click.option("--from", "first", metavar="SEQ|TIME", help="From this record on (default 1).")
@click.option("--to", "last", metavar="SEQ|TIME", help="Up to this record (default: the end).")
@json_option
def dump(store: Path, name: str, first: str | None, last: str | None, as_json: bool) -> None:
    """The events of NAME's log as JSON lines: {"seq", "time", "events"}."""
    del as_json  # always JSON lines
    try:
        log = _said_how_far(_log(store, name))
        start = _seq_of(log, first)
        if first is not None and parse_point(first)[1] is not None:
            start = (start or 0) + 1  # the first record after that time
        end = _seq_of(log, last)
        begin = start if start is not None else max(1, log.log.first_seq)
        total = (end if end is not None else log.log.last_seq) - begin + 1
        with out.progress("dump", total) as advance:
            for seq, when, events in log.events(begin, end):
                out.line({"seq": seq, "time": when, "events": _events(log, events)})
                advance(1)
    except ActorKVError as exc:
        _fail(exc)


@main.command()
@store_argument
@click.argument("name")
@click.argument("key")
@at_option
@json_option
def get(store: Path, name: str, key: str, point: str | None, as_json: bool) -> None:
    """The value of KEY in key space NAME (exit 1 if it has none)."""
    try:
        log = _said_how_far(_log(store, name))
        wanted = _parse_key(log, key)
        state, now = _state_at(log, point)
        entry = state.entries.get(log.stored_key(wanted))
        if entry is None or (entry.expires_at is not None and entry.expires_at <= now):
            _fail(f"{name} has no key {wanted!r}" + (f" at seq {state.seq}" if point else ""))
        value = entry.value if entry.decoded else msgspec.msgpack.decode(entry.value)
    except ActorKVError as exc:
        _fail(exc)
    out.show_entry(wanted, value, entry, as_json)


@main.command()
@store_argument
@click.argument("name")
@click.option("--prefix", help="Only keys that start with this (text keys).")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many keys.")
@at_option
@json_option
def scan(
    store: Path, name: str, prefix: str | None, limit: int | None, point: str | None, as_json: bool
) -> None:
    """Keys and values of key space NAME, in key order."""
    try:
        log = _said_how_far(_log(store, name))
        state, now = _state_at(log, point)
        rows: list[tuple[Any, Any, Entry]] = []
        for key, value, entry in log.entries(state, now):
            if prefix is not None and not (isinstance(key, str) and key.startswith(prefix)):
                continue
            if limit is not None and len(rows) >= limit:
                break
            rows.append((key, value, entry))
    except ActorKVError as exc:
        _fail(exc)
    out.show_rows(name, state.seq, rows, as_json)


@main.command()
@store_argument
@click.argument("name")
@click.argument("key")
@at_option
@json_option
def history(store: Path, name: str, key: str, point: str | None, as_json: bool) -> None:
    """Every retained change of KEY in key space NAME, oldest first."""
    try:
        log = _said_how_far(_log(store, name))
        wanted = _parse_key(log, key)
        seq = _seq_of(log, point)
        with out.spinner(f"reading {name}'s history"):
            versions = log.history(wanted)
        if seq is not None:
            versions = [version for version in versions if version.seq <= seq]
    except ActorKVError as exc:
        _fail(exc)
    out.show_history(wanted, versions, as_json)


@main.command()
@store_argument
@click.argument("name")
@click.option("--from", "first", type=click.IntRange(min=1), help="From this seq (default: next).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are written.")
@json_option
def tail(store: Path, name: str, first: int | None, follow: bool, as_json: bool) -> None:
    """NAME's records as JSON lines, from --from (or the end) on; -f keeps following.

    Follows by reading the log's files (every 0.25 s): it needs no access to the writer,
    and sees what the writer has written, not only what it has made durable.
    """
    del as_json  # always JSON lines
    try:
        log = _log(store, name)
        next_seq = first if first is not None else log.log.last_seq + 1
        while True:
            for seq, when, events in log.events(next_seq):
                out.line({"seq": seq, "time": when, "events": _events(log, events)})
                next_seq = seq + 1
            if not follow:
                return
            sys.stdout.flush()
            time.sleep(TAIL_POLL)
            log = _log(store, f"{log.kind}s/{log.name}")  # the files again: new records
    except ActorKVError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        return


def _events(log: ReadOnlyLog, events: list[Any]) -> list[Any]:
    if log.kind != "keyspace":
        return [msgspec.to_builtins(event) for event in events]
    return [_kv_event(log, event) for event in events]


def _kv_event(log: ReadOnlyLog, event: Any) -> dict[str, Any]:
    key = log.public_key
    match event:
        case Put():
            value = msgspec.msgpack.decode(bytes(event.value))
            found = {"op": "put", "key": key(event.key), "value": value, "version": event.version}
            if event.expires_at is not None:
                found["expires_at"] = event.expires_at
            return found
        case Delete():
            return {"op": "delete", "key": key(event.key)}
        case Expired():
            return {"op": "expire", "keys": [key(k) for k in event.keys]}
        case Batch():
            return {"op": "batch", "events": [_kv_event(log, inner) for inner in event.events]}
    return {"op": type(event).__name__}  # pragma: no cover - the codec decodes only these


_cli_admin.register(main)  # verify, anchor, repair, snapshot, compact, restore


@main.command("demo")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", type=click.IntRange(min=1), default=1000, help="Puts to write.")
@json_option
def demo_command(directory: Path | None, count: int, as_json: bool) -> None:
    """Write, reopen and read back a log (in a temporary directory unless given)."""
    if directory is not None:
        sys.exit(demo(directory, count, as_json=as_json))
    with tempfile.TemporaryDirectory(prefix="actorkv-demo-") as tmp:
        sys.exit(demo(Path(tmp), count, as_json=as_json))


if __name__ == "__main__":
    main()
