"""Writes tests/actors/fixtures/release1: a store as the earlier release's code left it.

``python -m tests.actors.make_upcast_fixture`` (from the repository's root) writes it again;
it is kept in the repository so that the upcaster tests read bytes an older version of
actorkv wrote, not only bytes this version writes with the old classes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from actors import Store
from tests.actors.test_upcasters import OLD_HISTORY, OldAccount

FIXTURE = Path(__file__).parent / "fixtures" / "release1"


def write(path: Path) -> None:
    with Store.open(path, recovery_budget=None, clock=lambda: 1_764_756_000.0) as store:
        old = store.spawn("acct", OldAccount)
        for event in OLD_HISTORY:
            old.blocking.write(event)


if __name__ == "__main__":
    shutil.rmtree(FIXTURE, ignore_errors=True)
    write(FIXTURE)
    (FIXTURE / "LOCK").unlink(missing_ok=True)
    for lock in FIXTURE.rglob("LOCK"):
        lock.unlink()
    print(f"wrote {FIXTURE}")
