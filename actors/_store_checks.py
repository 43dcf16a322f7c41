"""What a store checks when it opens a log: its options, and the log's manifest."""

from __future__ import annotations

import math
import pickle

from actors._keyspace_actor import KeySpaceActor
from actors._snapshots import HistoryPolicy
from storage.errors import InvalidOption
from storage.log import SegmentedLog
from storage.manifest import Manifest, read_manifest

__all__ = [
    "MIN_REPLAY_SAMPLE",
    "check_clock",
    "check_history",
    "check_manifest",
    "check_replayed_key_type",
    "check_shippable",
    "qualified_name",
    "replay_rate",
]

MIN_REPLAY_SAMPLE = 10_000  # records: fewer measure start-up more than replay


def check_clock(clock: object) -> None:
    if not callable(clock):
        msg = f"clock must be a callable returning seconds since the epoch, got {clock!r:.60}"
        raise InvalidOption(msg)
    try:
        now = clock()
    except Exception as exc:
        msg = f"clock() raised {type(exc).__name__}: {exc}; pass a working clock"
        raise InvalidOption(msg) from exc
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        msg = f"clock() must return a finite number of seconds, got {now!r:.60}"
        raise InvalidOption(msg)


def replay_rate(records: int, seconds: float) -> float:
    """Records per second this replay ran at (a conservative guess for short ones)."""
    if records < MIN_REPLAY_SAMPLE or seconds <= 0:
        return HistoryPolicy().replay_rate
    return records / seconds


def check_history(
    recovery_budget: object, retention: object, recent_versions: object
) -> HistoryPolicy:
    for name, value in (("recovery_budget", recovery_budget), ("retention", retention)):
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0 <= value < math.inf)
        ):
            msg = f"{name}={value!r} must be a non-negative number of seconds, or None"
            raise InvalidOption(msg)
    if recovery_budget is not None and recovery_budget == 0:
        msg = "recovery_budget=0 would snapshot after every group; use a positive budget"
        raise InvalidOption(msg)
    if (
        isinstance(recent_versions, bool)
        or not isinstance(recent_versions, int)
        or recent_versions < 0
    ):
        msg = f"recent_versions={recent_versions!r} must be an int >= 0"
        raise InvalidOption(msg)
    return HistoryPolicy(
        recovery_budget=recovery_budget,  # type: ignore[arg-type]
        retention=retention,  # type: ignore[arg-type]
        recent_versions=recent_versions,
    )


def check_manifest(log: SegmentedLog, expected: Manifest) -> Manifest | None:
    """The log's manifest, checked against what the caller opens it as (None if it has none).

    Raises:
        InvalidOption: The log holds another kind of data, or a key space's keys are of
            another type than ``key_type``.
    """
    stored = read_manifest(log.directory)
    if stored is None:
        return None
    name = log.directory.name
    if stored.kind != expected.kind:
        msg = f"{log.directory} holds a {stored.kind} log, not a {expected.kind}"
        raise InvalidOption(msg)
    if stored.key_type != expected.key_type:
        msg = (
            f"key space {name!r} holds {stored.key_type} keys (its manifest says so), but was "
            f"opened with key_type={expected.key_type}; open it with key_type={stored.key_type}"
        )
        raise InvalidOption(msg)
    return stored


def check_replayed_key_type(name: str, actor: KeySpaceActor, key_type: str) -> None:
    """For a key space written before manifests: its keys must be of the type it is opened as."""
    entries = actor.state.entries
    if not entries:
        return
    found = type(entries.keys()[0]).__name__
    if found != key_type:
        msg = (
            f"key space {name!r} holds {found} keys, but was opened with key_type={key_type}; "
            f"open it with key_type={found}"
        )
        raise InvalidOption(msg)


def qualified_name(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def check_archive_timing(interval: object, lease: object) -> None:
    """``archive_interval`` and ``archive_lease``: seconds, the interval a third of the lease."""
    for name, value in (("archive_interval", interval), ("archive_lease", lease)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            msg = f"{name}={value!r} must be seconds in (0, 3600]"
            raise InvalidOption(msg)
    if interval * 3 > lease:  # type: ignore[operator]
        msg = (
            f"archive_interval={interval!r} must be at most a third of archive_lease={lease!r}, "
            "so the lease is renewed in time"
        )
        raise InvalidOption(msg)


def check_shippable(archive: object) -> None:
    """Raise InvalidOption if ``archive`` cannot be sent to another process (a Ray host)."""
    if archive is None or isinstance(archive, str):
        return
    try:
        pickle.dumps(archive)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        msg = (
            f"under runtime='ray' every host opens the archive itself, and {archive!r} "
            f"cannot be sent to one ({exc}); give it as a URL (s3://bucket/prefix, with the "
            "endpoint in AWS_ENDPOINT_URL_S3) or an archive object that pickles"
        )
        raise InvalidOption(msg) from exc
