"""Stores the command-line tests read: built by the library, damaged by hand."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from actors import Store
from actors.cli import main
from tests.typing.typed_usage import Counter


def run(*args: str | Path) -> Result:
    """``actorkv ARGS`` through click's runner (stderr kept apart)."""
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def run_json(*args: str | Path) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A store: key space ``users`` (puts, a batch, a delete, a TTL), a snapshot at seq 20,
    a named subscriber at 10, key space ``places`` with tuple keys, actor ``counter``."""
    path = tmp_path / "store"
    with Store.open(path, recovery_budget=None) as store:
        users = store.keyspace("users")
        for i in range(20):
            users.put(f"u{i:02d}", {"n": i})
        users.snapshot()
        users.put("u01", "second")
        with users.batch() as batch:
            batch.put("b1", 1)
            batch.delete("u02")
        users.put("short", "lived", ttl=3600)
        subscription = users.subscribe(from_seq=1, name="mailer")
        for _ in range(10):
            subscription.next(5)
        subscription.ack(10)
        subscription.close()
        places = store.keyspace("places", key_type=tuple)
        places.put(("fr", "paris"), 2_100_000)
        places.put(("fr", "lyon"), 520_000)
        counter = store.spawn("counter", Counter)
        for amount in (1, 2, 3):
            counter.blocking.add(amount)
    return path


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


Builder = Callable[..., Path]
