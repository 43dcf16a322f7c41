"""A bank ledger as an event-sourced actor.

Run it: ``python -m examples.bank``. Accounts are opened, credited and debited by commands;
a withdrawal that would overdraw is refused; a transfer emits a withdrawal and a deposit as
ONE log record, so after any crash either both happened or neither did.

The state is an immutable snapshot (a new ``Ledger`` per event) because ``apply`` must be
pure: a command that fails after emitting is rolled back by keeping the old state object.
Copying the balances costs O(accounts) per event, fine for an example; a large ledger would
use one actor per account or a persistent map.
"""

from __future__ import annotations

import sys
import tempfile

import msgspec

from actors import EventSourcedActor, Store


class AccountOpened(msgspec.Struct, tag=True, frozen=True):
    account: str
    owner: str


class Deposited(msgspec.Struct, tag=True, frozen=True):
    account: str
    amount: int


class Withdrawn(msgspec.Struct, tag=True, frozen=True):
    account: str
    amount: int


LedgerEvent = AccountOpened | Deposited | Withdrawn


class Ledger(msgspec.Struct, frozen=True):
    """Balances in cents, and each account's owner."""

    balances: dict[str, int] = {}
    owners: dict[str, str] = {}


class InsufficientFunds(Exception):
    """A withdrawal or transfer would overdraw the account."""


class UnknownAccount(KeyError):
    """No account has that id."""


class Bank(EventSourcedActor[Ledger]):
    """Accounts, deposits, withdrawals and atomic transfers, amounts in whole cents."""

    def initial_state(self) -> Ledger:
        return Ledger()

    def apply(self, state: Ledger, event: LedgerEvent) -> Ledger:
        balances = dict(state.balances)
        match event:
            case AccountOpened(account=account, owner=owner):
                balances[account] = 0
                return Ledger(balances, {**state.owners, account: owner})
            case Deposited(account=account, amount=amount):
                balances[account] += amount
            case Withdrawn(account=account, amount=amount):
                balances[account] -= amount
        return Ledger(balances, state.owners)

    def open_account(self, account: str, owner: str) -> str:
        if account in self.state.balances:
            msg = f"account {account!r} already exists"
            raise ValueError(msg)
        self.emit(AccountOpened(account, owner))
        return account

    def deposit(self, account: str, amount: int) -> int:
        self._check(account, amount)
        self.emit(Deposited(account, amount))
        return self.state.balances[account]

    def withdraw(self, account: str, amount: int) -> int:
        self._check(account, amount)
        if self.state.balances[account] < amount:
            msg = f"{account} holds {self.state.balances[account]}, cannot withdraw {amount}"
            raise InsufficientFunds(msg)
        self.emit(Withdrawn(account, amount))
        return self.state.balances[account]

    def transfer(self, source: str, target: str, amount: int) -> tuple[int, int]:
        self._check(source, amount)
        self._check(target, amount)
        if source == target:
            msg = "cannot transfer to the same account"
            raise ValueError(msg)
        if self.state.balances[source] < amount:
            msg = f"{source} holds {self.state.balances[source]}, cannot transfer {amount}"
            raise InsufficientFunds(msg)
        self.emit(Withdrawn(source, amount), Deposited(target, amount))  # one record
        return self.state.balances[source], self.state.balances[target]

    def balance(self, account: str) -> int:
        self._check(account, 1)
        return self.state.balances[account]

    def total(self) -> int:
        return sum(self.state.balances.values())

    def _check(self, account: str, amount: int) -> None:
        if account not in self.state.balances:
            raise UnknownAccount(account)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            msg = f"amount must be a positive int of cents, got {amount!r}"
            raise ValueError(msg)


def main() -> int:
    with tempfile.TemporaryDirectory() as path:
        with Store.open(path) as store:
            bank = store.spawn("bank", Bank)
            bank.open_account("alice", "Alice").get()
            bank.open_account("bob", "Bob").get()
            bank.deposit("alice", 100_00).get()
            print("transfer 30.00 ->", bank.transfer("alice", "bob", 30_00).get())
            try:
                bank.withdraw("bob", 1_000_00).get()
            except InsufficientFunds as refused:
                print("refused:", refused)
        with Store.open(path) as store:
            bank = store.spawn("bank", Bank)
            print(
                "after reopen: alice", bank.balance("alice").get(), "bob", bank.balance("bob").get()
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
