"""verify's exit statuses on damaged stores, repair, snapshot, compact and restore."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from actors import Store
from storage.chain import Anchor
from tests.cli.conftest import run, run_json, segments


def tear(log: Path) -> None:
    """Half a record at the end of the newest segment: a write cut short."""
    newest = segments(log)[-1]
    with newest.open("ab") as file:
        file.write(b"\x40\x00\x00\x00half a record")


def flip(log: Path) -> tuple[Path, int]:
    """One byte of a record in the oldest segment changed; returns where."""
    oldest = segments(log)[0]
    data = bytearray(oldest.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0xFF
    oldest.write_bytes(bytes(data))
    return oldest, offset


def test_a_sound_store_verifies_with_status_0_and_against_its_saved_anchors(
    built: Path, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.json"
    saved = run_json("anchor", built)
    assert set(saved) == {"keyspaces/users", "keyspaces/places", "actors/counter"}
    anchors.write_text(json.dumps(saved))
    found = run_json("verify", built, "--anchor", anchors)
    assert found["status"] == 0
    assert all(log["anchored"] and log["ok"] for log in found["logs"])
    with Store.open(built) as store:  # written on: the old anchors still hold
        store.keyspace("users").put("later", 1)
    assert run("verify", built, "--anchor", anchors).exit_code == 0


def test_a_torn_tail_alone_is_status_2_and_repair_cuts_it(built: Path) -> None:
    users = built / "keyspaces" / "users"
    tear(users)
    result = run("verify", built, "--json")
    assert result.exit_code == 2
    found = json.loads(result.stdout)
    torn = [log for log in found["logs"] if log["torn_tail"]]
    assert [log["log"] for log in torn] == ["keyspaces/users"]
    assert segments(users)[-1].name in torn[0]["torn_tail"]
    dry = run_json("repair", built, "--dry-run")
    assert [log["log"] for log in dry["logs"] if log["would_cut"]] == ["keyspaces/users"]
    assert run("verify", built).exit_code == 2  # the dry run cut nothing
    repaired = run_json("repair", built)
    cut = [log for log in repaired["logs"] if log["changed"]]
    assert [(log["log"], log["last_seq"]) for log in cut] == [("keyspaces/users", 23)]
    assert run("verify", built).exit_code == 0
    assert run_json("get", built, "users", "u01")["value"] == "second"


def test_a_changed_record_is_status_1_naming_file_and_offset(built: Path) -> None:
    damaged, _ = flip(built / "keyspaces" / "users")
    result = run("verify", built)
    assert result.exit_code == 1
    assert damaged.name in result.stdout
    assert "CORRUPT" in result.stdout
    found = json.loads(run("verify", built, "--json").stdout)
    problems = [p for log in found["logs"] for p in log["problems"]]
    assert problems
    assert str(damaged) in problems[0]
    assert "offset" in problems[0]


def test_a_log_that_does_not_extend_its_anchor_is_status_3(built: Path, tmp_path: Path) -> None:
    saved = run_json("anchor", built)
    seq = saved["keyspaces/places"].split(":")[0]
    saved["keyspaces/places"] = str(Anchor(int(seq), bytes(32)))  # another history's head
    anchors = tmp_path / "anchors.json"
    anchors.write_text(json.dumps(saved))
    result = run("verify", built, "--anchor", anchors, "--json")
    assert result.exit_code == 3
    statuses = {log["log"]: log["status"] for log in json.loads(result.stdout)["logs"]}
    assert statuses == {"keyspaces/users": 0, "keyspaces/places": 3, "actors/counter": 0}
    tear(built / "keyspaces" / "users")  # a missed anchor outranks a torn tail...
    assert run("verify", built, "--anchor", anchors).exit_code == 3
    flip(built / "keyspaces" / "users")  # ...and corruption outranks both
    assert run("verify", built, "--anchor", anchors).exit_code == 1


def test_verify_takes_one_log_and_a_chain_key(tmp_path: Path) -> None:
    key = b"a secret of 32 bytes, exactly..."
    key_file = tmp_path / "key"
    key_file.write_bytes(key)
    with Store.open(tmp_path / "store", chain_key=key) as store:
        store.keyspace("k").put("a", 1)
        store.keyspace("other").put("b", 2)
    log = tmp_path / "store" / "keyspaces" / "k"
    assert run("verify", log, "--key-file", key_file).exit_code == 0
    assert run("verify", log).exit_code == 1  # a keyed chain's links cannot be checked
    one = tmp_path / "one-anchor"
    one.write_text(run_json("anchor", log)["k"])
    assert run("verify", log, "--key-file", key_file, "--anchor", one).exit_code == 0
    refused = run("verify", tmp_path / "store", "--anchor", one)
    assert refused.exit_code == 1
    assert "actorkv anchor STORE --json" in refused.stderr
    empty = tmp_path / "empty-key"
    empty.write_bytes(b"")
    assert run("verify", log, "--key-file", empty).exit_code == 2


def test_snapshot_then_compact_deletes_what_the_dry_run_said(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Store.open(path, segment_bytes=4096, recovery_budget=None) as store:
        events = store.keyspace("events")
        for i in range(400):
            events.put(f"e{i % 50}", "x" * 40)
    taken = run_json("snapshot", path, "events")
    assert [(s["log"], s["seq"]) for s in taken["snapshots"]] == [("keyspaces/events", 400)]
    planned = run_json("compact", path, "--dry-run")["logs"]
    assert planned[0]["segments_removed"] > 0
    assert run_json("inspect", path)["logs"][0]["first_seq"] == 1  # the dry run deleted nothing
    done = run_json("compact", path)["logs"]
    assert done == planned
    assert run_json("inspect", path)["logs"][0]["first_seq"] == done[0]["floor"]
    with Store.open(path) as store:
        assert len(store.keyspace("events")) == 50


def test_compact_keeps_what_a_subscriber_has_not_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Store.open(path, segment_bytes=4096, recovery_budget=None) as store:
        events = store.keyspace("events")
        events.subscribe(from_seq=1, name="slow").close()  # acknowledged nothing
        for i in range(400):
            events.put(f"e{i}", "x" * 40)
        events.snapshot()
    assert run_json("compact", path, "--dry-run")["logs"][0]["segments_removed"] == 0
    assert run_json("compact", path)["logs"][0]["segments_removed"] == 0
    assert len(run("dump", path, "events").stdout.splitlines()) == 400


def test_snapshot_of_an_actor_needs_its_class_importable(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = run_json("snapshot", built, "counter")
    assert taken["snapshots"][0]["seq"] == 3
    monkeypatch.setitem(sys.modules, "tests.typing.typed_usage", None)  # import fails as elsewhere
    refused = run("snapshot", built, "counter")
    assert refused.exit_code == 1
    assert "cannot be imported" in refused.stderr


def test_commands_that_write_refuse_a_store_open_elsewhere(built: Path) -> None:
    with Store.open(built):
        for args in (("snapshot", built), ("compact", built), ("repair", built)):
            result = run(*args)
            assert result.exit_code == 1, args
            assert "locked" in result.stderr, result.stderr


def test_restore_rebuilds_a_store_from_its_archive(tmp_path: Path) -> None:
    archive = f"file://{tmp_path / 'archive'}"
    with Store.open(tmp_path / "store", archive=archive) as store:
        users = store.keyspace("users")
        for i in range(30):
            users.put(f"u{i}", i)
    restored = run_json("restore", archive, tmp_path / "back", "--at", "20")
    assert restored["seqs"] == {"keyspaces/users": 20}
    assert run_json("get", tmp_path / "back", "users", "u19")["value"] == 19
    assert run("get", tmp_path / "back", "users", "u20").exit_code == 1
    refused = run("restore", archive, tmp_path / "store")
    assert refused.exit_code == 1
    assert "holds something else" in refused.stderr or "not empty" in refused.stderr


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_bench_and_demo_answer_help(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "usage" in result.stdout.lower()


def test_reads_of_a_log_with_an_incomplete_end_say_how_far_they_read(built: Path) -> None:
    tear(built / "keyspaces" / "users")
    got = run("get", built, "users", "u01", "--json")
    assert got.exit_code == 0
    assert json.loads(got.stdout)["value"] == "second"
    assert "read up to seq 23" in got.stderr
    assert "not a complete record" in got.stderr
    assert "read up to" not in run("get", built, "places", '["fr", "lyon"]').stderr


def test_demo_and_bench_answer_in_json(tmp_path: Path) -> None:
    summary = run_json("demo", tmp_path / "log", "--count", "20")
    assert summary["ok"] is True
    assert (summary["records"], summary["keys"]) == (23, 19)  # 21 puts, a batch, an expiry
    out = tmp_path / "bench"
    result = run(
        "bench",
        "--quick",
        "--records",
        "50",
        "--ops",
        "20",
        "--repeats",
        "1",
        "--only",
        "dbbench",
        "--engines",
        "sqlite3",
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((out / "results.json").read_text())
