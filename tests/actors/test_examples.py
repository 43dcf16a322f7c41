"""The bundled examples: the bank ledger and the lease service with fencing tokens."""

from __future__ import annotations

import random
import threading

import pytest

from actors import Store
from examples.bank import Bank, InsufficientFunds, UnknownAccount
from examples.leases import LeaseHeld, LeaseService, StaleToken
from tests.actors.conftest import TIMEOUT, read_records


def get(future):
    return future.get(timeout=TIMEOUT)


def test_bank_deposit_and_withdraw_move_the_balance(store):
    bank = store.spawn("bank", Bank)
    assert get(bank.open_account("alice", "Alice")) == "alice"
    assert get(bank.deposit("alice", 100)) == 100
    assert get(bank.withdraw("alice", 30)) == 70
    assert get(bank.balance("alice")) == 70
    with pytest.raises(UnknownAccount):
        get(bank.deposit("nobody", 1))
    with pytest.raises(ValueError, match="positive int"):
        get(bank.deposit("alice", 0))
    with pytest.raises(ValueError, match="already exists"):
        get(bank.open_account("alice", "Other"))


def test_bank_refuses_an_overdraft_and_writes_nothing(store_path):
    with Store.open(store_path) as store:
        bank = store.spawn("bank", Bank)
        get(bank.open_account("bob", "Bob"))
        get(bank.open_account("carol", "Carol"))
        get(bank.deposit("bob", 50))
        before = bank.stats()
        with pytest.raises(InsufficientFunds, match="cannot withdraw 51"):
            get(bank.withdraw("bob", 51))
        with pytest.raises(InsufficientFunds):
            get(bank.transfer("bob", "carol", 51))
        after = bank.stats()
        assert (after.records, after.events) == (before.records, before.events)
        assert get(bank.balance("bob")) == 50
        assert get(bank.balance("carol")) == 0
    assert len(read_records(store_path, "bank")) == 3


def test_bank_transfer_is_one_record_with_two_events(store_path):
    with Store.open(store_path) as store:
        bank = store.spawn("bank", Bank)
        get(bank.open_account("alice", "Alice"))
        get(bank.open_account("bob", "Bob"))
        get(bank.deposit("alice", 100))
        before = bank.stats()
        assert get(bank.transfer("alice", "bob", 30)) == (70, 30)
        after = bank.stats()
        assert after.records - before.records == 1
        assert after.events - before.events == 2
        with pytest.raises(ValueError, match="same account"):
            get(bank.transfer("alice", "alice", 1))
    assert read_records(store_path, "bank")[-1] == [
        {"type": "Withdrawn", "account": "alice", "amount": 30},
        {"type": "Deposited", "account": "bob", "amount": 30},
    ]


def test_bank_conserves_money_under_concurrent_random_transfers(store_path):
    accounts = [f"acct-{i}" for i in range(6)]
    with Store.open(store_path) as store:
        bank = store.spawn("bank", Bank)
        for account in accounts:
            get(bank.open_account(account, account))
            get(bank.deposit(account, 1000))
        total = get(bank.total())
        done = [0] * 8
        refused = [0] * 8

        def trader(i: int) -> None:
            rng = random.Random(i)
            for _ in range(150):
                source, target = rng.sample(accounts, 2)
                try:
                    get(bank.transfer(source, target, rng.randint(1, 700)))
                    done[i] += 1
                except InsufficientFunds:
                    refused[i] += 1

        threads = [threading.Thread(target=trader, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(done) + sum(refused) == 8 * 150
        assert sum(refused) > 0  # the rule was exercised, not just the happy path
        assert get(bank.total()) == total == 6000
        balances = [get(bank.balance(account)) for account in accounts]
        assert all(balance >= 0 for balance in balances)
        assert bank.stats().records == 2 * len(accounts) + sum(done)
    with Store.open(store_path) as store:
        bank = store.spawn("bank", Bank)
        assert get(bank.total()) == 6000
        assert [get(bank.balance(account)) for account in accounts] == balances


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_lease_tokens_strictly_increase_across_acquires_and_reopens(store_path):
    clock = FakeClock()
    tokens = []
    with Store.open(store_path) as store:
        leases = store.spawn("leases", LeaseService, clock=clock)
        tokens.append(get(leases.acquire("a", "w1", 5.0)))
        tokens.append(get(leases.acquire("b", "w1", 5.0)))
        tokens.append(get(leases.acquire("a", "w1", 5.0)))  # same owner takes it again
        held = tokens[-1]
    with Store.open(store_path) as store:
        leases = store.spawn("leases", LeaseService, clock=clock)
        assert get(leases.check("a", held))  # the lease survived the reopen
        with pytest.raises(LeaseHeld):
            get(leases.acquire("a", "w2", 5.0))
        tokens.append(get(leases.acquire("c", "w2", 5.0)))
        clock.advance(10.0)
        tokens.append(get(leases.acquire("a", "w2", 5.0)))
    assert tokens == sorted(set(tokens))
    assert tokens[0] >= 1


def test_a_second_owner_is_refused_while_held_and_gets_the_lease_after_expiry(store):
    clock = FakeClock()
    leases = store.spawn("leases", LeaseService, clock=clock)
    first = get(leases.acquire("db", "w1", 5.0))
    clock.advance(4.9)
    with pytest.raises(LeaseHeld, match="held by 'w1'"):
        get(leases.acquire("db", "w2", 5.0))
    records = leases.stats().records
    assert records == 1  # the refusal wrote nothing
    clock.advance(0.2)
    second = get(leases.acquire("db", "w2", 5.0))
    assert second > first
    assert not get(leases.check("db", first))
    assert get(leases.check("db", second))


def test_renew_and_release_with_a_stale_token_raise_stale_token(store):
    clock = FakeClock()
    leases = store.spawn("leases", LeaseService, clock=clock)
    old = get(leases.acquire("job", "w1", 5.0))
    current = get(leases.acquire("job", "w1", 5.0))
    with pytest.raises(StaleToken):
        get(leases.renew("job", old, 5.0))
    with pytest.raises(StaleToken):
        get(leases.release("job", old))
    with pytest.raises(StaleToken):
        get(leases.release("nothing-here", current))
    assert not get(leases.check("job", old))
    assert get(leases.check("job", current))
    clock.advance(4.0)
    assert get(leases.renew("job", current, 5.0)) == clock.now + 5.0
    clock.advance(4.0)
    assert get(leases.check("job", current))  # renewed past its first expiry
    get(leases.release("job", current))
    assert not get(leases.check("job", current))
    with pytest.raises(StaleToken):
        get(leases.renew("job", current, 5.0))


def test_an_expired_lease_token_is_stale(store):
    clock = FakeClock()
    leases = store.spawn("leases", LeaseService, clock=clock)
    token = get(leases.acquire("x", "w1", 1.0))
    clock.advance(1.0)
    assert not get(leases.check("x", token))
    with pytest.raises(StaleToken):
        get(leases.renew("x", token, 1.0))


@pytest.mark.parametrize("ttl", [0, -1, 86_401, True, "5"])
def test_a_lease_with_a_bad_ttl_is_refused_and_writes_nothing(store, ttl):
    leases = store.spawn("leases", LeaseService, clock=FakeClock())
    with pytest.raises(ValueError, match="ttl must be"):
        get(leases.acquire("x", "w1", ttl))
    assert leases.stats().records == 0


def test_the_shipped_lease_example_reads_leases_from_a_replica_in_another_process():
    import subprocess
    import sys

    from tests.reliability.children import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "examples.leases", "--shipped"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert "replica sees backup.lock: held by w2 with token 2" in lines
    assert "replica sees reports.lock: held by w1 with token 1" in lines
    assert "replica refuses to grant leases: only the service writes" in lines
