"""Secondary indexes as users declare and query them; ``storage.kv_index`` keeps them.

``Index(field="age")`` or ``Index(key=fn)`` says what to index; ``ks.index("by_age")`` is
an :class:`IndexQuery`. Definitions live in the key space's manifest; a key function cannot
be stored, so only its name is, and the open that does not pass it again is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from actors.ops import field_path
from storage.errors import (
    IndexNotReady,
    InvalidInput,
    InvalidOperation,
    InvalidOption,
    InvalidValue,
)
from storage.kv_index import Indexes, IndexSpec, SecondaryIndex, packed_bounds
from storage.manifest import IndexDefinition

if TYPE_CHECKING:
    from actors._core import ActorCore
    from actors._handle import ActorHandle
    from actors._keyspace import KeySpace
    from storage.kvstate import KVState

__all__ = ["Index", "IndexQuery", "KeySpaceIndexes", "reconcile_indexes", "value_decoder"]

_MISSING: Any = object()


class Index:
    """A secondary index of a key space: what to index and whether values are unique.

    ``Index(field="address.city")`` indexes a field of dict or Struct values (dotted for
    nesting; a key without the field is not indexed). ``Index(key=fn)`` indexes what
    ``fn(value)`` returns. Either way the result is one index value, a list of them (the
    key is found under each), or None (not indexed); index values are None-free scalars
    (bool, int, float, str, bytes) or tuples of them, ordered as tuple keys are
    (``storage.tuplekey``). ``unique=True`` refuses a write that would give a second live
    key the same value (``UniqueViolation``, nothing written).
    """

    __slots__ = ("field", "key", "unique")

    def __init__(
        self,
        field: str | Sequence[str] | None = None,
        *,
        key: Callable[[Any], Any] | None = None,
        unique: bool = False,
    ) -> None:
        """Check the definition (``InvalidOption`` unless exactly one of field and key)."""
        if (field is None) == (key is None):
            msg = "an Index takes exactly one of field='path' or key=function"
            raise InvalidOption(msg)
        function: object = key  # typed callers pass a function; untyped ones may not
        if function is not None and not callable(function):
            msg = f"Index key must be a function of the value, got {function!r:.60}"
            raise InvalidOption(msg)
        flag: object = unique
        if not isinstance(flag, bool):
            msg = f"Index unique must be a bool, got {flag!r:.60}"
            raise InvalidOption(msg)
        try:
            self.field = None if field is None else field_path(field)
        except InvalidInput as exc:
            raise InvalidOption(str(exc)) from exc
        self.key = key
        self.unique = unique

    def values_of(self, value: Any) -> Any:
        """The index value(s) of a key's value (None: not indexed)."""
        if self.key is not None:
            return self.key(value)
        node = value
        for name in self.field or ():
            if isinstance(node, dict):
                node = node.get(name, _MISSING)
            elif isinstance(node, msgspec.Struct):
                node = getattr(node, name, _MISSING)
            else:
                return None
            if node is _MISSING:
                return None
        return node

    def definition(self, name: str) -> IndexDefinition:
        """How the manifest keeps it."""
        if self.key is not None:
            function = f"{self.key.__module__}.{getattr(self.key, '__qualname__', self.key)}"
            return IndexDefinition(name, key=function, unique=self.unique)
        return IndexDefinition(name, field=self.field, unique=self.unique)

    def spec(self, name: str) -> IndexSpec:
        """The index as ``storage.kv_index`` keeps it."""
        values_of = self.values_of
        if self.field is not None and len(self.field) == 1:
            field = self.field[0]

            def values_of(value: Any) -> Any:  # the usual case, a top-level field of a dict
                if type(value) is dict:
                    return value.get(field)
                return self.values_of(value)

        return IndexSpec(name, values_of, self.unique)

    @classmethod
    def from_definition(cls, definition: IndexDefinition) -> Index:
        """A field index back from the manifest (key functions must be given again)."""
        assert definition.field is not None
        return cls(field=definition.field, unique=definition.unique)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Index):
            return NotImplemented
        return (self.field, self.key, self.unique) == (other.field, other.key, other.unique)

    def __hash__(self) -> int:
        return hash((self.field, self.key, self.unique))

    def __repr__(self) -> str:
        path = self.field or ()
        shown = ".".join(path) if not any("." in name for name in path) else path
        what = f"key={self.key!r}" if self.key is not None else f"field={shown!r}"
        return f"Index({what}{', unique=True' if self.unique else ''})"


def check_index_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 128:
        msg = f"an index name is a non-empty str of at most 128 characters, got {name!r:.60}"
        raise InvalidInput(msg)
    return name


def reconcile_indexes(
    keyspace: str, given: dict[str, Index] | None, stored: Sequence[IndexDefinition]
) -> dict[str, Index]:
    """The indexes to open a key space with: those given plus the manifest's field indexes.

    Raises:
        InvalidOption: An index of the manifest uses a key function that was not given
            again, or one given differs from the manifest's definition of that name.
    """
    chosen: dict[str, Index] = {}
    for name, given_index in (given or {}).items():
        check_index_name(name)
        unchecked: object = given_index
        if not isinstance(unchecked, Index):
            msg = f"indexes[{name!r}] must be an actors.Index, got {unchecked!r:.60}"
            raise InvalidOption(msg)
        chosen[name] = unchecked
    for definition in stored:
        index = chosen.get(definition.name)
        if index is None:
            if definition.key is not None:
                msg = (
                    f"key space {keyspace!r} has index {definition.name!r} on the key function "
                    f"{definition.key}; open it with indexes={{{definition.name!r}: "
                    f"Index(key={definition.key.rsplit('.', 1)[-1]}"
                    f"{', unique=True' if definition.unique else ''})}} (or pass it once and "
                    "drop_index it)"
                )
                raise InvalidOption(msg)
            chosen[definition.name] = Index.from_definition(definition)
        elif index.definition(definition.name) != definition:
            msg = (
                f"key space {keyspace!r} has index {definition.name!r} defined as {definition}, "
                f"not {index!r}; drop_index it first to change it"
            )
            raise InvalidOption(msg)
    return chosen


def value_decoder(
    value_type: Any, upcaster: Callable[[Any], Any] | None = None
) -> Callable[[bytes], Any]:
    """Stored bytes -> the value readers see (InvalidValue if it does not decode)."""
    decode = reading_decoder(value_type, upcaster)

    def decoded(data: bytes) -> Any:
        try:
            return decode(data)
        except msgspec.ValidationError as exc:
            msg = f"a stored value does not decode as {value_type!r}: {exc}"
            raise InvalidValue(msg) from exc

    return decoded


def reading_decoder(
    value_type: Any, upcaster: Callable[[Any], Any] | None = None
) -> Callable[[bytes], Any]:
    """Stored bytes -> a value of ``value_type``, older ones through ``upcaster``.

    A value that decodes as ``value_type`` is returned as is (the fast path); one that does
    not is decoded untyped, given to ``upcaster`` and converted to ``value_type``: that is
    how values written before a change of ``value_type`` are read. Raises
    ``msgspec.ValidationError`` when even that fails.
    """
    if value_type is None:
        return msgspec.msgpack.Decoder().decode
    typed = msgspec.msgpack.Decoder(value_type).decode
    if upcaster is None:
        return typed
    untyped = msgspec.msgpack.Decoder().decode

    def decode(data: bytes) -> Any:
        try:
            return typed(data)
        except msgspec.ValidationError:
            return msgspec.convert(upcaster(untyped(data)), value_type)

    return decode


class IndexQuery:
    """Queries of one index: ``get``, ``range`` and ``count``, each one consistent snapshot.

    Results are ``(index_value, key, value)`` in index order, then key order; a key whose
    value has several index values appears once under each. A query copies its matches and
    their entries in one hold of the key space's commit lock (~0.3 us a match: pass
    ``limit`` for large ranges), then decodes values as you iterate.
    """

    def __init__(
        self, keyspace: KeySpace, name: str, indexes: Indexes, index: SecondaryIndex, *, wait: bool
    ) -> None:
        """Use ``ks.index(name)``."""
        self.name = name
        self._keyspace = keyspace
        self._indexes = indexes
        self._index = index
        self._wait = wait

    def get(self, value: Any, *, wait: bool | None = None) -> Iterator[tuple[Any, Any, Any]]:
        """Every ``(value, key, key's value)`` whose index value equals ``value``."""
        low, _ = self._bounds(value, None)
        assert low is not None
        return self._query(low, low + b"\x00", reverse=False, limit=None, wait=wait)

    def range(
        self,
        lo: Any = None,
        hi: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
        wait: bool | None = None,
    ) -> Iterator[tuple[Any, Any, Any]]:
        """``(index_value, key, value)`` for ``lo <= index_value < hi`` (None: open end)."""
        self._keyspace._check_range(None, None, limit)
        low, high = self._bounds(lo, hi)
        return self._query(low, high, reverse=reverse, limit=limit, wait=wait)

    def count(self, lo: Any = None, hi: Any = None, *, wait: bool | None = None) -> int:
        """How many ``(index_value, key)`` pairs have ``lo <= index_value < hi``."""
        low, high = self._bounds(lo, hi)
        index = self._ready(wait)
        return self._indexes.count(self._keyspace._state, index, low, high)

    def _query(
        self,
        low: bytes | None,
        high: bytes | None,
        *,
        reverse: bool,
        limit: int | None,
        wait: bool | None,
    ) -> Iterator[tuple[Any, Any, Any]]:
        index = self._ready(wait)
        found = self._indexes.query(
            self._keyspace._state, index, low, high, reverse=reverse, limit=limit
        )
        return self._keyspace._index_results(found)

    def _bounds(self, lo: Any, hi: Any) -> tuple[bytes | None, bytes | None]:
        try:
            return packed_bounds(lo, hi)
        except InvalidInput as exc:
            msg = f"index {self.name!r}: {exc}"
            raise InvalidInput(msg) from exc

    def _ready(self, wait: bool | None) -> SecondaryIndex:
        self._keyspace._check_open()
        index = self._index
        if self._indexes.by_name.get(self.name) is not index:
            msg = f"index {self.name!r} of key space {self._keyspace.name!r} was dropped"
            raise InvalidOperation(msg)
        if not index.ready.is_set():
            if not (self._wait if wait is None else wait):
                msg = f"index {self.name!r} is still being built; query it with wait=True"
                raise IndexNotReady(msg)
            index.ready.wait()
        if index.failure is not None:
            msg = (
                f"index {self.name!r} could not be built: {index.failure}; drop_index it, fix "
                "the values (or the index), and create it again"
            )
            raise InvalidOperation(msg) from index.failure
        return index

    def __repr__(self) -> str:
        return f"<IndexQuery {self._keyspace.name!r}.{self.name!r}>"


class KeySpaceIndexes:
    """The index methods of :class:`actors.KeySpace` (a mixin: one module per concern)."""

    name: str
    _state: KVState
    _core: ActorCore
    _actor: ActorHandle[Any]
    _index_definitions: dict[str, Index]

    def create_index(self, name: str, index: Index) -> None:
        """Add a secondary index; returns once its definition is durable.

        Over existing keys a non-unique index is built in the background while writes go
        on (queries wait for it); a unique one is built before this returns, and writes
        wait for it, since its check must hold from the start.

        Raises:
            InvalidInput: A bad name. InvalidOption: ``index`` is not an ``Index``.
            InvalidOperation: An index of that name exists. UniqueViolation: A unique
                index over keys that already share a value (nothing created).
        """
        self._check_open()
        check_index_name(name)
        unchecked: object = index
        if not isinstance(unchecked, Index):
            msg = f"create_index needs an actors.Index, got {unchecked!r:.60}"
            raise InvalidOption(msg)
        self._actor.blocking.create_index(index.spec(name))
        self._index_definitions[name] = index
        self._save_index_definitions()

    def drop_index(self, name: str) -> bool:
        """Remove an index (its definition durably); returns whether it existed."""
        self._check_open()
        existed = bool(self._actor.blocking.drop_index(name))
        self._index_definitions.pop(name, None)
        self._save_index_definitions()
        return existed

    def index(self, name: str, *, wait: bool = True) -> IndexQuery:
        """Queries of the index ``name``.

        ``wait=False``: its queries raise ``IndexNotReady`` rather than wait while it is
        being built.

        Raises:
            InvalidInput: There is no such index.
        """
        self._check_open()
        indexes = self._state.indexes
        index = None if indexes is None else indexes.by_name.get(name)
        if indexes is None or index is None:
            known = ", ".join(sorted(self._index_definitions)) or "none"
            msg = f"key space {self.name!r} has no index {name!r} (it has: {known})"
            raise InvalidInput(msg)
        return IndexQuery(self, name, indexes, index, wait=wait)  # type: ignore[arg-type]

    def indexes(self) -> dict[str, Index]:
        """The key space's index definitions by name."""
        return dict(self._index_definitions)

    def _save_index_definitions(self) -> None:
        definitions = tuple(
            index.definition(name) for name, index in sorted(self._index_definitions.items())
        )
        snapshots = self._core.snapshots
        assert snapshots is not None  # key spaces always keep snapshots
        snapshots.rewrite_manifest(
            lambda manifest: msgspec.structs.replace(manifest, indexes=definitions)
        )

    def _check_open(self) -> None:
        raise NotImplementedError
