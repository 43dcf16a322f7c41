"""A lock/lease service with fencing tokens, as an event-sourced actor.

Run it: ``python -m examples.leases``, or ``python -m examples.leases --shipped`` for the
whole local-and-cloud story: the service's log is shipped to an archive (a directory here;
``s3://bucket/prefix`` works the same) and a second process reads the current leases from
a read-only replica of it. ``acquire(name, owner, ttl)`` grants a lease and
returns a fencing token; tokens strictly increase across all leases and restarts, so a
resource guarded by a lease can reject writes carrying an older token than it has seen.
An expired lease may be taken by another owner; ``renew`` and ``release`` need the current
token, and a stale token is refused.

Time enters only through commands (``expires_at`` is computed from the injected clock and
stored in the event), so ``apply`` stays pure and replay reproduces the same leases.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from actors import EventSourcedActor, ReadOnlyStore, Store


class LeaseGranted(msgspec.Struct, tag=True, frozen=True):
    name: str
    owner: str
    token: int
    expires_at: float


class LeaseRenewed(msgspec.Struct, tag=True, frozen=True):
    name: str
    token: int
    expires_at: float


class LeaseReleased(msgspec.Struct, tag=True, frozen=True):
    name: str
    token: int


LeaseEvent = LeaseGranted | LeaseRenewed | LeaseReleased


class Lease(msgspec.Struct, frozen=True):
    owner: str
    token: int
    expires_at: float


class LeaseTable(msgspec.Struct, frozen=True):
    leases: dict[str, Lease] = {}
    last_token: int = 0


class LeaseHeld(Exception):
    """Another owner holds an unexpired lease on the name."""


class StaleToken(Exception):
    """The token is not the current token of an unexpired lease."""


class LeaseService(EventSourcedActor[LeaseTable]):
    """Named leases with strictly increasing fencing tokens."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def initial_state(self) -> LeaseTable:
        return LeaseTable()

    def apply(self, state: LeaseTable, event: LeaseEvent) -> LeaseTable:
        leases = dict(state.leases)
        match event:
            case LeaseGranted(name=name, owner=owner, token=token, expires_at=expires_at):
                leases[name] = Lease(owner, token, expires_at)
                return LeaseTable(leases, token)
            case LeaseRenewed(name=name, expires_at=expires_at):
                leases[name] = msgspec.structs.replace(leases[name], expires_at=expires_at)
            case LeaseReleased(name=name):
                del leases[name]
        return LeaseTable(leases, state.last_token)

    def acquire(self, name: str, owner: str, ttl: float) -> int:
        """Grant ``name`` to ``owner`` for ``ttl`` seconds; returns the fencing token."""
        _check_ttl(ttl)
        now = self.clock()
        current = self.state.leases.get(name)
        if current is not None and current.expires_at > now and current.owner != owner:
            msg = f"{name!r} is held by {current.owner!r} for {current.expires_at - now:.3f}s"
            raise LeaseHeld(msg)
        token = self.state.last_token + 1
        self.emit(LeaseGranted(name, owner, token, now + ttl))
        return token

    def renew(self, name: str, token: int, ttl: float) -> float:
        """Extend the lease holding ``token``; returns its new expiry time."""
        _check_ttl(ttl)
        self._current(name, token)
        expires_at = self.clock() + ttl
        self.emit(LeaseRenewed(name, token, expires_at))
        return expires_at

    def release(self, name: str, token: int) -> None:
        """Give the lease up early."""
        self._current(name, token)
        self.emit(LeaseReleased(name, token))

    def check(self, name: str, token: int) -> bool:
        """Whether ``token`` is the current token of an unexpired lease on ``name``."""
        try:
            self._current(name, token)
        except StaleToken:
            return False
        return True

    def _current(self, name: str, token: int) -> Lease:
        lease = self.state.leases.get(name)
        if lease is None or lease.token != token or lease.expires_at <= self.clock():
            msg = f"token {token} is not the current lease on {name!r}"
            raise StaleToken(msg)
        return lease


def _check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 86_400:
        msg = f"ttl must be a number of seconds in (0, 86400], got {ttl!r}"
        raise ValueError(msg)


def main() -> int:
    if sys.argv[1:2] == ["--read"]:  # the second process: a replica, read-only
        return read_from_replica(sys.argv[2], sys.argv[3])
    if sys.argv[1:2] == ["--shipped"]:
        return shipped()
    with tempfile.TemporaryDirectory() as path, Store.open(path) as store:
        leases = store.spawn("leases", LeaseService)
        token = leases.acquire("reports.lock", "worker-1", 5.0).get()
        print("worker-1 holds reports.lock with token", token)
        try:
            leases.acquire("reports.lock", "worker-2", 5.0).get()
        except LeaseHeld as held:
            print("worker-2 refused:", held)
        leases.release("reports.lock", token).get()
        print(
            "worker-2 after release gets token",
            leases.acquire("reports.lock", "worker-2", 5.0).get(),
        )
    return 0


def shipped() -> int:
    """Leases granted on this machine, shipped; another process reads them from a replica."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = f"file://{Path(scratch) / 'archive'}"
        with Store.open(Path(scratch) / "service", archive=archive, archive_interval=0.1) as store:
            leases = store.spawn("leases", LeaseService)
            print("granted reports.lock, token", leases.acquire("reports.lock", "w1", 60).get())
            print("granted backup.lock, token", leases.acquire("backup.lock", "w2", 60).get())
            while store.archive_status()["actors/leases"].pending:  # within archive_interval
                time.sleep(0.02)
            reader = [sys.executable, "-m", "examples.leases", "--read", archive]
            subprocess.run([*reader, str(Path(scratch) / "replica")], check=True)  # noqa: S603
    return 0


def read_from_replica(archive: str, cache: str) -> int:
    with Store.open_replica(archive, cache, follow=False) as replica:
        table: LeaseTable = replica.spawn("leases", LeaseService).durable_state
        for name, lease in sorted(table.leases.items()):
            print(f"replica sees {name}: held by {lease.owner} with token {lease.token}")
        try:
            replica.spawn("leases", LeaseService).acquire("x", "w3", 5).get()
        except ReadOnlyStore:
            print("replica refuses to grant leases: only the service writes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
