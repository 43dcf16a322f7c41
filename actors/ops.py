"""Record operations: several changes to one record in one atomic command.

``ks.operate(key, [ops.add("visits", 1), ops.set("last.page", "/"), ops.read("visits")])``
runs every operation, in order, on the key's current value inside the key space's actor,
writes the result as one put, and returns one result per operation. It is Aerospike's
``operate`` for a map-shaped record: no read-modify-write loop, no lost update.

A record is a dict (or a Struct, which is stored as a map); a missing key starts as ``{}``.
A path is a field name, dotted for nesting (``"address.city"``), or a tuple of names when a
name itself holds a dot. Only maps are walked: a path never indexes into a list.

What each operation does and returns:

========================  =====================================================  ==============
operation                 effect                                                 result
========================  =====================================================  ==============
``set(path, value)``      the field holds ``value`` (missing parents are made)   None
``remove(path)``          the field is gone (it must exist)                      its old value
``add(path, number)``     the field holds itself plus ``number`` (missing: 0)    the new number
``append(path, item)``    ``item`` is added to the field's list (missing: [])    the new length
``read(path)``            nothing (it must exist)                                its value
========================  =====================================================  ==============

Each operation sees the changes of the ones before it. A missing field where one must exist,
a parent that is not a map, ``add`` on something other than a number, or ``append`` on
something other than a list raise ``InvalidValue``, and then nothing is written. A call made
only of ``read`` operations writes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from storage.errors import InvalidInput, InvalidValue

__all__ = ["Op", "add", "append", "apply_ops", "field_path", "read", "remove", "set"]

OpKind = Literal["set", "remove", "add", "append", "read"]

_MISSING: Any = object()


class Op(msgspec.Struct, frozen=True):
    """One operation of :func:`KeySpace.operate`; build it with the functions below."""

    kind: OpKind
    path: tuple[str, ...]
    operand: Any = None

    @property
    def writes(self) -> bool:
        """Whether the operation changes the record."""
        return self.kind != "read"

    def __repr__(self) -> str:
        field = ".".join(self.path)
        if self.kind in ("remove", "read"):
            return f"ops.{self.kind}({field!r})"
        return f"ops.{self.kind}({field!r}, {self.operand!r:.40})"


def set(path: str | Sequence[str], value: Any) -> Op:  # noqa: A001  # the operation's name
    """Make the field at ``path`` hold ``value``; missing parent maps are created."""
    return Op("set", field_path(path), value)


def remove(path: str | Sequence[str]) -> Op:
    """Remove the field at ``path`` (which must exist); the result is its old value."""
    return Op("remove", field_path(path))


def add(path: str | Sequence[str], number: float) -> Op:
    """Add ``number`` to the field at ``path`` (0 if missing); the result is the new value."""
    if isinstance(number, bool) or not isinstance(number, int | float):
        msg = f"ops.add needs an int or a float, got {number!r:.60}"
        raise InvalidValue(msg)
    return Op("add", field_path(path), number)


def append(path: str | Sequence[str], item: Any) -> Op:
    """Append ``item`` to the list at ``path`` ([] if missing); the result is its new length."""
    return Op("append", field_path(path), item)


def read(path: str | Sequence[str]) -> Op:
    """Read the field at ``path`` (which must exist), as the operations before left it."""
    return Op("read", field_path(path))


def apply_ops(record: Any, operations: Sequence[Op]) -> tuple[Any, list[Any]]:
    """Run ``operations`` on ``record`` (a decoded value, or None if the key is missing).

    Returns the new record and one result per operation. ``record`` is changed in place:
    pass a freshly decoded value.

    Raises:
        InvalidValue: The record is not a map, or an operation does not fit it.
    """
    if record is None:
        record = {}
    elif not isinstance(record, dict):
        msg = (
            f"operate works on map records (dicts or Structs); this key holds a "
            f"{type(record).__name__}"
        )
        raise InvalidValue(msg)
    results = [_apply(record, op) for op in operations]
    return record, results


def _apply(record: dict[str, Any], op: Op) -> Any:
    *parents, field = op.path
    kind = op.kind
    parent = _parent(record, op, parents, create=kind in ("set", "add", "append"))
    current = parent.get(field, _MISSING)
    if kind == "set":
        parent[field] = copy.deepcopy(op.operand)  # later caller changes must not leak in
        return None
    if kind == "read":
        _require(current, op)
        return copy.deepcopy(current)
    if kind == "remove":
        _require(current, op)
        del parent[field]
        return current
    if kind == "add":
        base = 0 if current is _MISSING else current
        if isinstance(base, bool) or not isinstance(base, int | float):
            _mismatch(op, base, "a number")
        total = base + op.operand
        parent[field] = total
        return total
    items = [] if current is _MISSING else current  # append
    if not isinstance(items, list):
        _mismatch(op, items, "a list")
    items.append(copy.deepcopy(op.operand))
    parent[field] = items
    return len(items)


def _parent(record: dict[str, Any], op: Op, names: list[str], *, create: bool) -> dict[str, Any]:
    node = record
    for depth, name in enumerate(names):
        child = node.get(name, _MISSING)
        if child is _MISSING:
            if not create:
                _require(child, op)
            child = node[name] = {}
        elif not isinstance(child, dict):
            where = ".".join(op.path[: depth + 1])
            msg = f"{op!r}: {where!r} holds a {type(child).__name__}, not a map"
            raise InvalidValue(msg)
        node = child
    return node


def _require(value: Any, op: Op) -> None:
    if value is _MISSING:
        msg = f"{op!r}: the record has no field {'.'.join(op.path)!r}; nothing was written"
        raise InvalidValue(msg)


def _mismatch(op: Op, value: Any, wanted: str) -> None:
    msg = (
        f"{op!r}: field {'.'.join(op.path)!r} holds a {type(value).__name__}, not {wanted}; "
        "nothing was written"
    )
    raise InvalidValue(msg)


def field_path(path: object) -> tuple[str, ...]:
    """A dotted path (or a sequence of names) as a tuple of names; InvalidInput if bad."""
    if isinstance(path, str):
        names = tuple(path.split("."))
    elif isinstance(path, list | tuple) and all(isinstance(name, str) for name in path):
        names = tuple(path)
    else:
        msg = f"a field path is a dotted str or a tuple of str, got {path!r:.60}"
        raise InvalidInput(msg)
    if not names or not all(names):
        msg = f"field path {path!r:.60} has an empty name"
        raise InvalidInput(msg)
    return names
