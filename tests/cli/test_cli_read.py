"""The read-only commands: what they print equals what the library reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors import Store
from tests.cli.conftest import run, run_json
from tests.typing.typed_usage import Counter


def test_inspect_lists_every_log_with_its_seqs_snapshots_head_and_subscribers(built: Path) -> None:
    found = run_json("inspect", built)
    by_name = {log["name"]: log for log in found["logs"]}
    assert sorted(by_name) == ["counter", "places", "users"]
    users = by_name["users"]
    assert (users["kind"], users["first_seq"], users["last_seq"]) == ("keyspace", 1, 23)
    assert users["records"] == 23
    assert users["snapshots"] == [20]
    assert users["subscribers"] == {"mailer": 10}
    assert users["torn_tail"] is None
    assert users["damage"] is None
    assert by_name["places"]["key_type"] == "tuple"
    assert by_name["counter"]["kind"] == "actor"
    assert by_name["counter"]["actor_class"] == "tests.typing.typed_usage.Counter"
    with Store.open(built) as store:
        anchor = store.keyspace("users").anchor()
    assert users["chain_head"] == anchor.head.hex()
    plain = run("inspect", built)
    assert plain.exit_code == 0
    assert "mailer at 10" in plain.stdout


def test_get_scan_and_history_read_what_the_store_reads(built: Path) -> None:
    assert run_json("get", built, "users", "u01") == {
        "key": "u01",
        "value": "second",
        "version": 2,
        "seq": 21,
    }
    assert run("get", built, "users", "u01").stdout == "second\n"
    assert run_json("get", built, "users", "u01", "--at", "20")["value"] == {"n": 1}
    missing = run("get", built, "users", "u02")
    assert missing.exit_code == 1
    assert "no key 'u02'" in missing.stderr
    assert run_json("get", built, "users", "u02", "--at", "21")["value"] == {"n": 2}
    scanned = run_json("scan", built, "users", "--prefix", "u1", "--limit", "3")
    assert [row["key"] for row in scanned["rows"]] == ["u10", "u11", "u12"]
    with Store.open(built) as store:
        users = store.keyspace("users")
        everything = run_json("scan", built, "users")
        assert [(row["key"], row["value"]) for row in everything["rows"]] == list(users.items())
        assert everything["seq"] == users.last_seq
        history = run_json("history", built, "users", "u01")
        assert [(v["seq"], v["op"], v["value"], v["version"]) for v in history["versions"]] == [
            (v.seq, v.op, v.value, v.version) for v in users.history("u01")
        ]
        places = store.keyspace("places", key_type=tuple)
        got = run_json("get", built, "places", '["fr", "lyon"]')
        assert (got["key"], got["value"]) == (["fr", "lyon"], places.get(("fr", "lyon")))


def test_a_point_in_time_reads_the_state_then(built: Path) -> None:
    with Store.open(built) as store:
        users = store.keyspace("users")
        when = users.time_of(20)
    then = run_json("get", built, "users", "u01", "--at", repr(when))
    assert (then["value"], then["seq"]) == ({"n": 1}, 2)
    assert run_json("scan", built, "users", "--at", repr(when))["seq"] == 20


def test_dump_prints_every_event_as_a_json_line(built: Path) -> None:
    result = run("dump", built, "users", "--from", "20", "--to", "22")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [20, 21, 22]
    assert lines[1]["events"] == [{"op": "put", "key": "u01", "value": "second", "version": 2}]
    assert lines[2]["events"] == [
        {
            "op": "batch",
            "events": [
                {"op": "put", "key": "b1", "value": 1, "version": 1},
                {"op": "delete", "key": "u02"},
            ],
        }
    ]
    everything = run("dump", built, "users").stdout.splitlines()
    assert len(everything) == 23
    actor = [json.loads(line) for line in run("dump", built, "counter").stdout.splitlines()]
    assert [line["events"] for line in actor] == [
        [{"type": "added", "amount": amount}] for amount in (1, 2, 3)
    ]


def test_bad_names_keys_and_points_are_refused_with_what_to_do(built: Path) -> None:
    unknown = run("get", built, "nobody", "k")
    assert unknown.exit_code == 1
    assert "no key space 'nobody'" in unknown.stderr
    assert "places, users" in unknown.stderr
    actor = run("get", built, "counter", "k")
    assert actor.exit_code == 1
    assert "actor's log" in actor.stderr
    tuple_key = run("get", built, "places", "paris")
    assert tuple_key.exit_code == 2
    assert "JSON array" in tuple_key.stderr
    bad_point = run("get", built, "users", "u01", "--at", "yesterday")
    assert bad_point.exit_code == 1
    assert "ISO 8601" in bad_point.stderr
    late = run("get", built, "users", "u01", "--at", "999")
    assert late.exit_code == 1
    assert "0..23" in late.stderr
    not_a_store = run("inspect", built / "keyspaces")
    assert not_a_store.exit_code == 1
    assert "store's directory" in not_a_store.stderr


def test_reads_change_nothing_in_the_store(built: Path) -> None:
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in built.rglob("*") if p.is_file()}
    for args in (
        ("inspect", built),
        ("scan", built, "users"),
        ("history", built, "users", "u01"),
        ("dump", built, "counter"),
        ("verify", built),
        ("anchor", built),
        ("tail", built, "users", "--from", "1"),
    ):
        assert run(*args).exit_code == 0, args
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in built.rglob("*") if p.is_file()}
    assert after == before
    with Store.open(built) as store:  # and the store still opens as it was
        assert store.spawn("counter", Counter).blocking.add(4) == 10


def test_tail_follows_an_actor_named_by_its_folder(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses = []

    def pause(seconds: float) -> None:  # the second pause ends the follow, as Ctrl-C would
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("actors.cli.time.sleep", pause)
    result = run("tail", built, "actors/counter", "--from", "2", "-f")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [2, 3]
    assert len(pauses) == 2
