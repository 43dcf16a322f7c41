"""Recovery: clean stops, replay progress, and kill -9 in the middle of group commits."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest

from actors import ActorStopped, EventSourcedActor, Store
from examples.bank import Bank
from tests.actors.conftest import TIMEOUT, ProbeCounter, reopened_value
from tests.actors.crash_child import ACCOUNTS, Tally

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_child.py")
OPENING_BALANCE = 1000


def ledger(bank) -> dict[str, int]:
    return dict(bank.balances().get(timeout=TIMEOUT))


class InspectableBank(Bank):
    def balances(self) -> dict[str, int]:
        return self.state.balances

    def owners(self) -> dict[str, str]:
        return self.state.owners


def test_a_clean_stop_and_reopen_restores_the_bank_exactly(store_path):
    with Store.open(store_path) as store:
        bank = store.spawn("bank", InspectableBank)
        for account, owner in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")]:
            bank.open_account(account, owner).get(timeout=TIMEOUT)
        bank.deposit("alice", 500).get(timeout=TIMEOUT)
        bank.deposit("bob", 70).get(timeout=TIMEOUT)
        bank.transfer("alice", "carol", 120).get(timeout=TIMEOUT)
        bank.withdraw("bob", 20).get(timeout=TIMEOUT)
        before = ledger(bank)
        owners = bank.owners().get(timeout=TIMEOUT)
        records = bank.stats().records
    assert before == {"alice": 380, "bob": 50, "carol": 120}
    with Store.open(store_path) as store:
        bank = store.spawn("bank", InspectableBank)
        assert ledger(bank) == before
        assert bank.owners().get(timeout=TIMEOUT) == owners
        assert bank.stats().records_replayed == records
        assert bank.stats().events_replayed == records + 1  # the transfer holds two
        assert bank.deposit("bob", 1).get(timeout=TIMEOUT) == 51


def test_replay_reports_progress_ending_with_done_equal_to_total(store_path):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        for _ in range(30):
            counter.increment(1).get(timeout=TIMEOUT)
    calls: list[tuple[str, int, int]] = []
    with Store.open(store_path, on_replay=lambda *call: calls.append(call)) as store:
        assert store.spawn("counter", ProbeCounter).value().get(timeout=TIMEOUT) == 30
        store.spawn("empty", ProbeCounter)
    counter_calls = [call for call in calls if call[0] == "counter"]
    assert counter_calls
    assert counter_calls[-1] == ("counter", 30, 30)
    done = [d for _, d, _ in counter_calls]
    assert done == sorted(done)
    assert [call for call in calls if call[0] == "empty"][-1] == ("empty", 0, 0)


def test_replay_crosses_many_segments(store_path):
    with Store.open(store_path, segment_bytes=4096) as store:
        counter = store.spawn("counter", ProbeCounter)
        for _ in range(20):
            counter.add_each(*([1] * 40)).get(timeout=TIMEOUT)
    segments = list((store_path / "actors" / "counter").glob("*.seg"))
    assert len(segments) > 3
    assert reopened_value(store_path, segment_bytes=4096) == 800


def test_stopping_one_actor_and_spawning_it_again_in_the_same_store_recovers(store):
    counter = store.spawn("counter", ProbeCounter)
    futures = [counter.increment(1) for _ in range(50)]
    counter.stop()
    assert [f.get(timeout=TIMEOUT) for f in futures] == list(range(1, 51))
    again = store.spawn("counter", ProbeCounter)
    assert again.value().get(timeout=TIMEOUT) == 50
    assert again.increment(1).get(timeout=TIMEOUT) == 51
    assert again.last_seq == 51


def test_a_stopped_actor_refuses_commands_and_can_be_spawned_again(store):
    counter = store.spawn("counter", ProbeCounter)
    counter.increment(5).get(timeout=TIMEOUT)
    counter.stop()
    counter.stop()  # safe twice
    assert not counter.alive
    with pytest.raises(ActorStopped):
        counter.increment(1)
    again = store.spawn("counter", ProbeCounter)
    assert again is not counter
    assert again.value().get(timeout=TIMEOUT) == 5
    assert again.stats().records_replayed == 1


class Ticked(msgspec.Struct, tag=True, frozen=True):
    pass


class SeqRecorder(EventSourcedActor[tuple[int, ...]]):
    def initial_state(self) -> tuple[int, ...]:
        return ()

    def apply(self, state: tuple[int, ...], event: Ticked) -> tuple[int, ...]:
        return (*state, self.record_seq)

    def tick(self, fail: bool = False) -> int:
        self.emit(Ticked())
        if fail:
            raise ValueError("refused after emitting")
        return self.record_seq

    def seqs(self) -> tuple[int, ...]:
        return self.state


def test_record_seq_is_gapless_and_the_same_live_and_on_replay(store_path):
    with Store.open(store_path) as store:
        recorder = store.spawn("seqs", SeqRecorder)
        futures = [recorder.tick(fail=i % 3 == 1) for i in range(9)]
        accepted = []
        for future in futures:
            with contextlib.suppress(ValueError):
                accepted.append(future.get(timeout=TIMEOUT))
        assert accepted == list(range(1, 7))
        assert recorder.seqs().get(timeout=TIMEOUT) == tuple(accepted)
    with Store.open(store_path) as store:
        assert store.spawn("seqs", SeqRecorder).seqs().get(timeout=TIMEOUT) == tuple(accepted)


def prepare_crash_store(store_path: Path) -> None:
    with Store.open(store_path) as store:
        bank = store.spawn("bank", Bank)
        for account in ACCOUNTS:
            bank.open_account(account, account.upper()).get(timeout=TIMEOUT)
            bank.deposit(account, OPENING_BALANCE).get(timeout=TIMEOUT)


def crash_once(store_path: Path, target: int, stderr_path: Path) -> tuple[int, list[int]]:
    """Run the child until it has acknowledged ``target`` increments, then SIGKILL it.

    Returns how many increments it may have sent, and every acknowledged value.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(store_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=ROOT,
        )
    watchdog = threading.Timer(60, child.kill)  # a hung child fails the test, never hangs it
    watchdog.start()
    try:
        assert child.stdout is not None
        lines: list[str] = []
        acks = 0
        for line in child.stdout:
            lines.append(line)
            acks += line.startswith("ack ")
            if acks >= target:
                os.kill(child.pid, signal.SIGKILL)
                break
        lines += child.stdout.readlines()  # what it printed before it died
        child.wait(TIMEOUT)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, stderr_path.read_text()
    sent = sum(line == "sent\n" for line in lines)
    acked = [int(line.split()[1]) for line in lines if line.startswith("ack ")]
    assert len(acked) >= target, stderr_path.read_text()
    return sent, acked


def run_crash_rounds(tmp_path: Path, rounds: int, seed: int) -> None:
    store_path = tmp_path / "store"
    prepare_crash_store(store_path)
    rng = random.Random(seed)
    previous = 0
    for round_number in range(rounds):
        target = rng.randint(50, 500)
        sent, acked = crash_once(store_path, target, tmp_path / f"child-{round_number}.err")
        with Store.open(store_path) as store:
            tally = store.spawn("tally", Tally)
            value = tally.value().get(timeout=TIMEOUT)
            assert len(set(acked)) == len(acked)  # every acknowledgement is its own command
            assert value >= max(acked), "an acknowledged increment was lost"
            assert value <= previous + sent, "an increment appeared that was never sent"
            assert tally.stats().records_replayed == value
            bank = store.spawn("bank", InspectableBank)
            balances = ledger(bank)
            assert sorted(balances) == sorted(ACCOUNTS)
            assert all(balance >= 0 for balance in balances.values())
            assert sum(balances.values()) == OPENING_BALANCE * len(ACCOUNTS)  # no half transfer
        previous = value


def test_kill_9_loses_no_acknowledged_command_and_invents_none(tmp_path):
    run_crash_rounds(tmp_path, rounds=5, seed=20261128)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ACTORKV_LONG") != "1", reason="set ACTORKV_LONG=1")
def test_kill_9_loses_no_acknowledged_command_over_many_rounds(tmp_path):
    run_crash_rounds(tmp_path, rounds=50, seed=1128)


LEFT_OPEN = """
import sys
from actors import Store
store = Store.open(sys.argv[1], fsync="never")
keyspace = store.keyspace("k")
futures = [keyspace.put_async(f"k{i}", i) for i in range(500)]
print("leaving without close", flush=True)
"""


def test_a_store_left_open_neither_blocks_exit_nor_loses_queued_writes(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", LEFT_OPEN, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    with Store.open(tmp_path) as store:
        keyspace = store.keyspace("k")
        assert len(keyspace) == 500
        assert keyspace.get("k499") == 499
