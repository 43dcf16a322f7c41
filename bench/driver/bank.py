"""Event-sourced commands: a bank-accounts workload on actorkv and on ``eventsourcing``.

One seeded command list runs, one command at a time, on every engine: open every account,
then 40% deposits, 30% withdrawals, 30% transfers. Overdrawing commands are refused alike
everywhere (and still count). A transfer is atomic everywhere: one actorkv record holding
both events, or one ``Application.save`` of both aggregates (one SQLite transaction).

- actorkv: :class:`Ledger`, one actor for all accounts, ``fsync="always"`` and ``"never"``.
  Its state is a tuple of balance chunks: ``apply`` stays pure but copies O(sqrt(accounts))
  per event, not a whole dict as ``examples/bank.py`` does.
- eventsourcing + SQLite recorder: its pool sets ``journal_mode=WAL`` and never sets
  ``synchronous``, so SQLite's default FULL applies (checked: ``PRAGMA synchronous`` = 2):
  the WAL is fsynced at every commit. Durable, like actorkv's ``fsync="always"``.
- eventsourcing + POPO recorder: in memory, not durable.

eventsourcing runs with an aggregate cache holding every account and fast-forward off: its
fastest single-instance setting (1.6-1.8x the cache with fast-forward; without a cache every
command re-reads the account's events). Aggregates are still deep-copied out of the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from actors import EventSourcedActor, Store

from .core import Latencies, Row, RunContext, measure

if TYPE_CHECKING:
    from storage.log import FsyncPolicy

try:  # an optional peer: without it the bank runs on actorkv alone
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
except ImportError:  # pragma: no cover - depends on the environment
    Application = None  # type: ignore[assignment,misc]

WORKLOAD = "bank"
CHUNK = 32  # balances per chunk of the ledger's state: copying 32 + accounts/32 per event
ES_SQLITE = "fsync per command (WAL, synchronous=FULL: SQLite default)"
ES_POPO = "none (in memory)"
ES_ACTORKV = "fsync per command (actors.eventsourcing, ACTORKV_FSYNC=always)"
NOTES = {
    "actorkv": "bench-local Ledger actor, state a tuple of 32-balance chunks",
    "eventsourcing": "aggregate cache of every account, fast-forward off, deep copies on",
}

Op = tuple[str, tuple[int, ...]]
"""A command: method name (open, deposit, withdraw, transfer) and its int arguments."""

Engine = tuple[Callable[[str, tuple[int, ...]], object], Callable[[], int]]
"""An open engine: ``run(command, args)`` returns once durable; ``total()`` sums balances."""


class InsufficientFunds(Exception):
    """A withdrawal or transfer would overdraw an account; every engine raises this."""


def bank_ops(ctx: RunContext) -> tuple[int, list[Op]]:
    """The seeded command list shared by every engine: ``(accounts, ops)``.

    ``ctx.ops`` commands (at most 2,000 under ``ctx.quick``, else 5,000); one account per
    20 commands, 10 to 1,000 accounts, all opened first.
    """
    count = min(ctx.ops, 2_000 if ctx.quick else 5_000)
    accounts = max(10, min(1_000, count // 20))
    rng = ctx.rng(WORKLOAD)
    ops: list[Op] = [("open", (number,)) for number in range(accounts)]
    while len(ops) < max(count, accounts + 1):
        roll, account = rng.random(), rng.randrange(accounts)
        if roll < 0.4:
            ops.append(("deposit", (account, rng.randint(100, 10_000))))
        elif roll < 0.7:
            ops.append(("withdraw", (account, rng.randint(1, 5_000))))
        else:
            target = (account + rng.randrange(1, accounts)) % accounts
            ops.append(("transfer", (account, target, rng.randint(1, 5_000))))
    return accounts, ops


def run_bank(ctx: RunContext) -> list[Row]:
    """Run the bank workload on every available engine; same commands for each.

    Returns:
        Rows with p50/p99 per command; ``extra`` holds ``accounts`` and ``refused``.
    """
    accounts, ops = bank_ops(ctx)
    engines = [
        ("actorkv", "fsync per command", _actorkv(ctx, "always")),
        ("actorkv", "no fsync (OS decides)", _actorkv(ctx, "never")),
    ]
    if Application is None:
        ctx.notice("bank: eventsourcing not installed; skipped (pip install eventsourcing)")
    else:
        sqlite = _eventsourcing(ctx, "eventsourcing.sqlite", accounts)
        engines.append(("eventsourcing-sqlite", ES_SQLITE, sqlite))
        on_actorkv = _eventsourcing(ctx, "actors.eventsourcing", accounts)
        engines.append(("eventsourcing-actorkv", ES_ACTORKV, on_actorkv))
        engines.append(
            ("eventsourcing-popo", ES_POPO, _eventsourcing(ctx, "eventsourcing.popo", accounts))
        )
    expected = _expected_total(ops)
    rows = []
    for name, durability, make in engines:
        notes = f"{accounts} accounts; {NOTES[name.split('-')[0]]}"
        row = _measure(ctx, name, durability, make, ops, notes, expected)
        row.extra = {"durable": durability.startswith("fsync"), "accounts": accounts, **row.extra}
        rows.append(row)
    return rows


def _measure(
    ctx: RunContext,
    engine: str,
    durability: str,
    make: Callable[[], AbstractContextManager[Engine]],
    ops: list[Op],
    notes: str,
    expected: int,
) -> Row:
    refusals: list[int] = []

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        with make() as (run, total):
            yield lambda latencies: refusals.append(_replay(run, ops, latencies))
            if total() != expected:
                ctx.notice(f"bank: {engine} ends with total {total()}, not {expected}")

    row = measure(
        ctx,
        engine=engine,
        workload=WORKLOAD,
        durability=durability,
        ops=len(ops),
        trial=trial,
        notes=notes,
    )
    row.extra = {"refused": refusals[0] if refusals else None}
    return row


def _replay(
    run: Callable[[str, tuple[int, ...]], object], ops: list[Op], latencies: Latencies
) -> int:
    """Run ``ops`` in order, timing each; returns how many were refused."""
    clock, add, refused = time.perf_counter_ns, latencies.add, 0
    for name, args in ops:
        started = clock()
        try:
            run(name, args)
        except InsufficientFunds:
            refused += 1
        add(clock() - started)
    return refused


def _expected_total(ops: list[Op]) -> int:
    """Money in the bank after ``ops``, from a plain dict model (checks every engine)."""
    balances: dict[int, int] = {}
    for name, args in ops:
        if name == "open":
            balances[args[0]] = 0
        elif name == "deposit":
            balances[args[0]] += args[1]
        elif balances[args[0]] >= args[-1]:
            balances[args[0]] -= args[-1]
            if name == "transfer":
                balances[args[1]] += args[2]
    return sum(balances.values())


# -- actorkv -----------------------------------------------------------------------------


class Opened(msgspec.Struct, tag=True, frozen=True, array_like=True):
    account: int


class Deposited(msgspec.Struct, tag=True, frozen=True, array_like=True):
    account: int
    amount: int


class Withdrawn(msgspec.Struct, tag=True, frozen=True, array_like=True):
    account: int
    amount: int


class Balances(msgspec.Struct, frozen=True):
    """Balances in cents of accounts 0..n-1, as a tuple of ``CHUNK``-long tuples."""

    chunks: tuple[tuple[int, ...], ...] = ()
    count: int = 0

    def get(self, account: int) -> int:
        """The balance of ``account``. O(1)."""
        return self.chunks[account // CHUNK][account % CHUNK]

    def set(self, account: int, balance: int) -> Balances:
        """A copy with ``account`` (existing, or the next number) at ``balance``.

        O(CHUNK + count / CHUNK).
        """
        row, column = divmod(account, CHUNK)
        chunk = self.chunks[row] if row < len(self.chunks) else ()
        chunk = (*chunk[:column], balance, *chunk[column + 1 :])
        chunks = (*self.chunks[:row], chunk, *self.chunks[row + 1 :])
        return Balances(chunks, max(self.count, account + 1))


class Ledger(EventSourcedActor[Balances]):
    """Every account in one actor, so a transfer is one record. Accounts are numbered."""

    def initial_state(self) -> Balances:
        return Balances()

    def apply(self, state: Balances, event: Opened | Deposited | Withdrawn) -> Balances:
        match event:
            case Opened(account=account):
                return state.set(account, 0)
            case Deposited(account=account, amount=amount):
                return state.set(account, state.get(account) + amount)
            case Withdrawn(account=account, amount=amount):
                return state.set(account, state.get(account) - amount)

    def open(self, account: int) -> None:
        if account != self.state.count:
            raise ValueError(f"next account is {self.state.count}, not {account}")
        self.emit(Opened(account))

    def deposit(self, account: int, amount: int) -> None:
        self._check(account)
        self.emit(Deposited(account, amount))

    def withdraw(self, account: int, amount: int) -> None:
        self._check(account, amount)
        self.emit(Withdrawn(account, amount))

    def transfer(self, source: int, target: int, amount: int) -> None:
        self._check(source, amount)
        self._check(target)
        self.emit(Withdrawn(source, amount), Deposited(target, amount))  # one record

    def total(self) -> int:
        return sum(sum(chunk) for chunk in self.state.chunks)

    def _check(self, account: int, debit: int = 0) -> None:
        if not 0 <= account < self.state.count:
            raise KeyError(account)
        if self.state.get(account) < debit:
            msg = f"account {account} holds {self.state.get(account)}, cannot pay {debit}"
            raise InsufficientFunds(msg)


def _actorkv(ctx: RunContext, fsync: FsyncPolicy) -> Callable[[], AbstractContextManager[Engine]]:
    @contextmanager
    def make() -> Iterator[Engine]:
        with ctx.fresh_dir("bank-actorkv") as path, Store.open(path, fsync=fsync) as store:
            ledger = store.spawn("ledger", Ledger)

            def run(command: str, args: tuple[int, ...]) -> object:
                return getattr(ledger, command)(*args).get()

            yield run, lambda: int(ledger.total().get())

    return make


# -- eventsourcing ------------------------------------------------------------------------

if Application is not None:

    class EsAccount(Aggregate):
        """One bank account; its number names it (a uuid5), so the bank can find it."""

        @staticmethod
        def create_id(number: int) -> UUID:
            return uuid5(NAMESPACE_URL, f"actorkv-bench:account:{number}")

        @event("Opened")
        def __init__(self, number: int) -> None:
            self.number = number
            self.balance = 0

        @event("Deposited")
        def credit(self, amount: int) -> None:
            self.balance += amount

        @event("Withdrawn")
        def debit(self, amount: int) -> None:
            self.balance -= amount

    class EsBank(Application[UUID]):
        """The same four commands; each ends in one ``save`` (one transaction)."""

        def open(self, account: int) -> None:
            self.save(EsAccount(number=account))

        def deposit(self, account: int, amount: int) -> None:
            target = self._account(account)
            target.credit(amount)
            self.save(target)

        def withdraw(self, account: int, amount: int) -> None:
            source = self._account(account, amount)
            source.debit(amount)
            self.save(source)

        def transfer(self, source: int, target: int, amount: int) -> None:
            payer, payee = self._account(source, amount), self._account(target)
            payer.debit(amount)
            payee.credit(amount)
            self.save(payer, payee)  # both aggregates' events in one transaction

        def total(self, accounts: int) -> int:
            return sum(self._account(number).balance for number in range(accounts))

        def _account(self, number: int, debit: int = 0) -> EsAccount:
            account: EsAccount = self.repository.get(EsAccount.create_id(number))
            if account.balance < debit:
                msg = f"account {number} holds {account.balance}, cannot pay {debit}"
                raise InsufficientFunds(msg)
            return account


def _eventsourcing(
    ctx: RunContext, module: str, accounts: int
) -> Callable[[], AbstractContextManager[Engine]]:
    @contextmanager
    def make() -> Iterator[Engine]:
        with ctx.fresh_dir(f"bank-es-{module.replace('.', '-')}") as path:
            env = {
                "PERSISTENCE_MODULE": module,
                "SQLITE_DBNAME": str(path / "bank.db"),
                "ACTORKV_PATH": str(path / "store"),
                "AGGREGATE_CACHE_MAXSIZE": str(accounts),
                "AGGREGATE_CACHE_FASTFORWARD": "n",
            }
            with EsBank(env=env) as bank:

                def run(command: str, args: tuple[int, ...]) -> object:
                    return getattr(bank, command)(*args)

                yield run, lambda: bank.total(accounts)

    return make
