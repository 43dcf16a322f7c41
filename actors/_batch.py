"""WriteBatch: puts and deletes of one key space, checked as added, written atomically."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from actors._core import Command
from actors._keyspace_actor import BatchOp, DeleteOp, IncrementOp, PutOp, Receipt
from actors._keyspace_input import check_expect
from storage.errors import InvalidOperation

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

    from actors._keyspace import KeySpace

__all__ = ["WriteBatch"]


class WriteBatch:
    """Collects puts, deletes and increments, checked as added; written atomically on exit.

    Single use: ``put`` and ``delete`` work only inside its one ``with`` block, and the
    block can be entered once. Anything else raises :class:`InvalidOperation`: a reused
    batch would write its old operations again, over whatever changed since.
    """

    def __init__(self, keyspace: KeySpace) -> None:
        self._keyspace = keyspace
        self._ops: list[BatchOp] = []
        self._stage = "new"  # -> "open" in the with block -> "done"
        self._bytes = 0  # the values' encoded size: what the record will weigh, roughly
        self.receipt: Receipt | None = None
        """The batch's receipt once written (None if it changed nothing)."""

    def put(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> None:
        """Add a put (checked now; InvalidKey/InvalidValue raise inside the block)."""
        if self._stage != "open":
            self._check_open()
        keyspace = self._keyspace
        if ttl is None and expect_version is None:  # once per put of a bulk load: no tuples
            keyspace._check_key(key)
            op = PutOp(key, keyspace.encode_value(value), None, None)
        else:
            op = PutOp(*keyspace._put_args(key, value, ttl, expect_version))
        self._ops.append(op)
        self._bytes += len(op.value)

    def increment(self, key: Any, by: int = 1) -> None:
        """Add an increment of ``key``'s int value (see :meth:`KeySpace.increment`)."""
        self._check_open()
        self._keyspace._check_key(key)
        self._ops.append(IncrementOp(key, self._keyspace._check_increment(by)))

    def delete(self, key: Any, *, expect_version: int | None = None) -> None:
        """Add a delete (a missing key is skipped unless ``expect_version`` says otherwise)."""
        self._check_open()
        self._keyspace._check_key(key)
        check_expect(expect_version)
        self._ops.append(DeleteOp(key, expect_version))

    def __len__(self) -> int:
        return len(self._ops)

    def __enter__(self) -> Self:
        if self._stage != "new":
            msg = "a WriteBatch is single-use: take a new one with keyspace.batch()"
            raise InvalidOperation(msg)
        self._stage = "open"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Write the batch unless the block raised."""
        self._stage = "done"
        if exc_type is None and self._ops:
            command = Command("write_batch", (self._ops,), {}, None, self._bytes)
            self.receipt = self._keyspace._execute(command)

    def _check_open(self) -> None:
        if self._stage != "open":
            where = "before its with block" if self._stage == "new" else "after its with block"
            msg = (
                f"this WriteBatch is used {where}; write with `with keyspace.batch() as b:` "
                "and call b.put()/b.delete() inside the block (a batch is single-use)"
            )
            raise InvalidOperation(msg)
