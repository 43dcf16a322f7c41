"""The ``actorkv`` commands that check and change a store.

``verify`` and ``anchor`` only read; ``repair``, ``snapshot`` and ``compact`` open the store
(or each log) and need it closed elsewhere (``StoreLocked`` says so); ``restore`` writes a
new directory.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from actors import _cli_output as out
from actors._actor import EventSourcedActor, import_actor_class
from actors._inspect import ReadOnlyLog, find_logs, parse_point
from actors._store import Store
from storage import DirectoryLock
from storage.chain import Anchor
from storage.errors import ActorKVError, InvalidInput
from storage.positions import read_positions
from storage.reader import LogReader
from storage.repair import repair as repair_log
from storage.restore import restore as restore_store
from storage.verify import VerifyReport
from storage.verify import verify as verify_log

__all__ = ["register"]

OK, CORRUPT, TORN, UNANCHORED = 0, 1, 2, 3
"""``actorkv verify``'s exit statuses (the worst found wins: corrupt, unanchored, torn)."""

_SEVERITY = {OK: 0, TORN: 1, UNANCHORED: 2, CORRUPT: 3}


def _fail(error: ActorKVError | str, status: int = 1) -> NoReturn:
    out.error(str(error))
    sys.exit(status)


def _logs(path: Path) -> list[tuple[str, Path]]:
    """``(label, directory)`` of every log under ``path``: a store, or one log's directory."""
    if any(path.glob("*.seg")):
        return [(path.name, path)]
    return [(f"{kind}s/{name}", log) for kind, name, log in find_logs(path)]


def _anchors(text: str, labels: list[str]) -> dict[str, Anchor]:
    """The anchors an ``--anchor`` file gives, by log label.

    The file holds what ``actorkv anchor --json`` prints (an object of label -> anchor),
    or, for a single log, the one anchor ``SEQ:HEXHEAD``.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        if len(labels) != 1:
            msg = (
                "the anchor file holds one anchor but the store has "
                f"{len(labels)} logs: save them with `actorkv anchor STORE --json`"
            )
            raise InvalidInput(msg)
        return {labels[0]: Anchor.parse(stripped)}
    try:
        given = msgspec.json.decode(stripped, type=dict[str, str])
    except msgspec.DecodeError as exc:
        msg = f"the anchor file is not a JSON object of log -> 'SEQ:HEXHEAD' ({exc})"
        raise InvalidInput(msg) from None
    unknown = sorted(set(given) - set(labels))
    if unknown:
        msg = f"the anchor file names logs the store does not hold: {', '.join(unknown)}"
        raise InvalidInput(msg)
    return {label: Anchor.parse(anchor) for label, anchor in given.items()}


def _status(report: VerifyReport, directory: Path, anchored: bool) -> int:
    marker = f"{directory}: anchor "
    others = [problem for problem in report.problems if not problem.startswith(marker)]
    if others:
        return CORRUPT
    if anchored and not report.anchored:
        return UNANCHORED
    return TORN if report.torn_tail is not None else OK


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    data = path.read_bytes()
    if not 1 <= len(data) <= 64:
        _fail(f"the key file {path} holds {len(data)} bytes; a chain key is 1 to 64 bytes", 2)
    return data


def register(main: click.Group) -> None:
    """Add the commands of this module to ``main``."""
    for command in (verify, anchor, repair, snapshot, compact, restore, migrate):
        main.add_command(command)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
path_argument = click.argument(
    "store", type=click.Path(exists=True, file_okay=False, path_type=Path)
)


@click.command()
@path_argument
@click.option(
    "--anchor",
    "anchor_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Prove the logs extend these anchors (what `actorkv anchor --json` saved).",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The chain key (the file's bytes, exactly) of a keyed store.",
)
@json_option
def verify(store: Path, anchor_file: Path | None, key_file: Path | None, as_json: bool) -> None:
    """Check every log's records, hash chain and snapshots (a store, or one log's directory).

    Exit 0: everything verifies; 1: corruption (the report names file and offset); 2: only
    a torn tail (a write in progress, or one the next open cuts); 3: a log does not extend
    its anchor.
    """
    key = _key(key_file)
    try:
        logs = _logs(store)
        anchors = (
            _anchors(anchor_file.read_text(), [label for label, _ in logs]) if anchor_file else {}
        )
        results = []
        with out.progress("verify", len(logs)) as advance:
            for label, directory in logs:
                report = verify_log(directory, anchor=anchors.get(label), key=key)
                results.append((label, report, _status(report, directory, label in anchors)))
                advance(1)
    except ActorKVError as exc:
        _fail(exc)
    worst = max((status for *_, status in results), key=_SEVERITY.__getitem__, default=OK)
    if as_json:
        out.show_json(
            {
                "status": worst,
                "logs": [
                    {"log": label, "status": status, **_fields(report)}
                    for label, report, status in results
                ],
            }
        )
    else:
        words = {OK: "ok", TORN: "torn tail", UNANCHORED: "NOT ANCHORED", CORRUPT: "CORRUPT"}
        rows = [
            [
                label,
                words[status],
                f"{report.records:,}",
                f"{report.first_seq}..{report.last_seq}",
                "yes" if report.anchored else "-",
            ]
            for label, report, status in results
        ]
        out.show_table(f"verify {store}", ["log", "status", "records", "seqs", "anchored"], rows)
        for label, report, _ in results:
            for problem in report.problems:
                out.say(f"{label}: {problem}")
            if report.torn_tail:
                out.say(f"{label}: torn tail: {report.torn_tail}")
    sys.exit(worst)


def _fields(report: Any) -> dict[str, Any]:
    return {name: getattr(report, name) for name in report.__dataclass_fields__}


@click.command()
@path_argument
@json_option
def anchor(store: Path, as_json: bool) -> None:
    """Each log's anchor now (SEQ:HEXHEAD).

    Save it: `verify --anchor FILE` proves later that the log still extends it.
    """
    try:
        found = {}
        for label, directory in _logs(store):
            reader = LogReader.open(directory)
            found[label] = str(Anchor(reader.last_seq, reader.head))
    except ActorKVError as exc:
        _fail(exc)
    if as_json:
        out.show_json(found)
    else:
        for label, text in found.items():
            out.say(f"{label} {text}")


def _repair_each(
    logs: list[tuple[str, Path]], dry_run: bool, results: list[dict[str, Any]]
) -> None:
    for label, directory in logs:
        if dry_run:
            report = verify_log(directory)
            problem = report.problems[0] if report.problems else report.torn_tail
            results.append({"log": label, "would_cut": problem, "last_seq": report.last_seq})
        else:
            repaired = repair_log(directory)
            results.append(
                {
                    "log": label,
                    "changed": repaired.changed,
                    "last_seq": repaired.last_seq,
                    "damaged": None if repaired.damaged is None else str(repaired.damaged),
                    "offset": repaired.offset,
                    "reason": repaired.reason,
                    "bytes_cut": repaired.bytes_cut,
                    "backups": [str(path) for path in repaired.backups],
                }
            )


@click.command()
@path_argument
@click.option("--dry-run", is_flag=True, help="Say what would be cut; change nothing.")
@json_option
def repair(store: Path, dry_run: bool, as_json: bool) -> None:
    """Cut each log at its first damaged record, keeping `.broken` copies of what is cut.

    Needs the store closed everywhere. --dry-run only reads, and says where each log would
    be cut.
    """
    results: list[dict[str, Any]] = []
    try:
        logs = _logs(store)
        whole = len(logs) != 1 or logs[0][1] != store  # a store: no open of it meanwhile
        lock = DirectoryLock.acquire(store) if whole and not dry_run else None
        try:
            _repair_each(logs, dry_run, results)
        finally:
            if lock is not None:
                lock.release()
    except ActorKVError as exc:
        _fail(exc)
    if as_json:
        out.show_json({"dry_run": dry_run, "logs": results})
        return
    for result in results:
        if dry_run:
            cut = result["would_cut"]
            out.say(
                f"{result['log']}: " + (f"would cut: {cut}" if cut else "sound, nothing to cut")
            )
        elif result["changed"]:
            out.say(
                f"{result['log']}: cut {result['bytes_cut']:,} bytes at {result['damaged']} "
                f"offset {result['offset']} ({result['reason']}); kept to seq "
                f"{result['last_seq']}; copies: {', '.join(result['backups'])}"
            )
        else:
            out.say(f"{result['log']}: sound, nothing cut (to seq {result['last_seq']})")


def _actor_class(log: ReadOnlyLog) -> type[EventSourcedActor[Any]]:
    """The actor's class, imported by the name its manifest records."""
    recorded = log.manifest.actor_class if log.manifest is not None else None
    if not recorded:
        msg = f"actor {log.name!r}: its manifest does not name its class, so it cannot be opened"
        raise InvalidInput(msg)
    return import_actor_class(recorded, log.name)


@contextlib.contextmanager
def _opened(store: Path, **options: Any) -> Iterator[Store]:
    with Store.open(store, recovery_budget=None, **options) as opened:
        yield opened


def _chosen(store: Path, name: str | None) -> list[ReadOnlyLog]:
    logs = [ReadOnlyLog(store, kind, found) for kind, found, _ in find_logs(store)]
    if name is None:
        return logs
    chosen = [log for log in logs if name in (log.name, f"{log.kind}s/{log.name}")]
    if not chosen:
        msg = f"{store} has no key space or actor {name!r}"
        raise InvalidInput(msg)
    return chosen[:1]


def _open_log(opened: Store, log: ReadOnlyLog) -> Any:
    if log.kind == "keyspace":
        return opened.keyspace(log.name)
    return opened.spawn(log.name, _actor_class(log))


@click.command()
@path_argument
@click.argument("name", required=False)
@json_option
def snapshot(store: Path, name: str | None, as_json: bool) -> None:
    """Take a snapshot of NAME (default: every key space and actor) now."""
    results = []
    try:
        logs = _chosen(store, name)
        with _opened(store) as opened, out.spinner("taking snapshots"):
            for log in logs:
                handle = _open_log(opened, log)
                taken = handle.snapshot()
                info = taken if log.kind == "keyspace" else taken.get(timeout=600)
                results.append(
                    {"log": f"{log.kind}s/{log.name}", "seq": info.seq, "file": str(info.path)}
                )
    except ActorKVError as exc:
        _fail(exc)
    if as_json:
        out.show_json({"snapshots": results})
        return
    for result in results:
        out.say(f"{result['log']}: snapshot at seq {result['seq']} ({result['file']})")


def _compact_plan(log: ReadOnlyLog, retention: float) -> dict[str, Any]:
    """What ``compact`` would delete of ``log`` (the rule of ``SegmentedLog.drop_segments``)."""
    listed = [snapshot.seq for snapshot in log.snapshots.listed]
    keep_from = (max(listed) + 1) if listed else 0
    for acked in read_positions(log.path).values():  # a subscriber still reading older records
        keep_from = min(keep_from, acked + 1)
    before = time.time() - retention
    segments = log.log.segments
    going = []
    for current, following in itertools.pairwise(segments):
        if following.base_seq > keep_from or current.path.stat().st_mtime >= before:
            break
        going.append(current.path)
    return {
        "log": f"{log.kind}s/{log.name}",
        "segments_removed": len(going),
        "bytes_freed": sum(path.stat().st_size for path in going),
        "floor": segments[len(going)].base_seq if segments else 0,
    }


@click.command()
@path_argument
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds of history to keep (0: only what recovery and subscribers need).",
)
@click.option("--archive", metavar="URL", help="The store's archive: what it lacks is kept.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; change nothing.")
@json_option
def compact(
    store: Path, retention: float, archive: str | None, dry_run: bool, as_json: bool
) -> None:
    """Delete whole segments below each log's newest snapshot that retention does not keep.

    Take a snapshot first (`actorkv snapshot`) to let more go. A store that ships to an
    archive must be given it (--archive), or what is not shipped yet could be deleted.
    """
    results = []
    try:
        logs = _chosen(store, None)
        if dry_run:
            results = [_compact_plan(log, retention) for log in logs]
        else:
            opening = _opened(store, retention=retention, archive=archive)
            with opening as opened, out.spinner("compacting"):
                for log in logs:
                    report = _open_log(opened, log).compact()
                    results.append(
                        {"log": f"{log.kind}s/{log.name}", **msgspec.structs.asdict(report)}
                    )
    except ActorKVError as exc:
        _fail(exc)
    if as_json:
        out.show_json({"dry_run": dry_run, "logs": results})
        return
    verb = "would delete" if dry_run else "deleted"
    for result in results:
        out.say(
            f"{result['log']}: {verb} {result['segments_removed']} segments "
            f"({result['bytes_freed']:,} bytes); history from seq {result['floor']}"
        )


@click.command()
@click.argument("archive")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--at", "point", metavar="SEQ|TIME", help="As of a seq or time (default: latest).")
@json_option
def restore(archive: str, target: Path, point: str | None, as_json: bool) -> None:
    """Rebuild a store in TARGET (new or empty) from ARCHIVE (s3://bucket/prefix, file:///dir)."""
    seq, when = parse_point(point) if point is not None else (None, None)
    try:
        with out.spinner(f"restoring {archive} into {target}"):
            report = restore_store(archive, target, seq=seq, time=when)
    except ActorKVError as exc:
        _fail(exc)
    if as_json:
        out.show_json(_fields(report))
        return
    for directory, last in report.seqs.items():
        base = report.snapshots.get(directory)
        out.say(f"{directory}: to seq {last}" + (f" (from the snapshot at {base})" if base else ""))
    out.say(
        f"restored {report.target}: {report.downloaded} objects, {report.bytes:,} bytes in "
        f"{report.seconds:.2f} s ({report.reused} already there)"
    )


@click.command()
@path_argument
@click.argument("name")
@json_option
def migrate(store: Path, name: str, as_json: bool) -> None:
    """Rewrite actor NAME's log through its class's upcasters, keeping the old one as a backup.

    The class is imported by the name its manifest records (run this where it is
    importable). Needs the store closed everywhere. Anchors of the old log do not verify
    the new one, and an archive must take it under a new prefix.
    """
    try:
        with _opened(store) as opened, out.spinner(f"migrating {name}"):
            report = opened.migrate(name)
    except ActorKVError as exc:
        _fail(exc)
    found = {**_fields(report), "backup": str(report.backup)}
    if as_json:
        out.show_json(found)
        return
    out.say(
        f"actors/{name}: {report.records} records rewritten ({report.upcast} upcast, "
        f"{report.emptied} left empty); the old log is {report.backup}"
    )
