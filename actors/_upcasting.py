"""Reading records written by older code: ``EventSourcedActor.upcasters``.

An actor's log outlives its event classes. ``upcasters`` maps a tag a record was written
with (an event type since renamed, split, changed or retired) to a function that takes that
event's fields as a dict and returns a current event, a list of them, or an empty list (a
retired event). What a function returns may also be a dict holding an old tag (under the
union's tag field, ``"type"`` by default), which goes through that tag's upcaster in turn:
that is how a v1 -> v2 -> v3 chain is written, each old tag mapped once.

Records are never rewritten: the old bytes stay in the log (and its chain and archive stay
valid); each read decodes them again through the upcasters. The fast path is untouched: a
chunk of records is decoded with the current types in one call, as before. When that fails,
the chunk is decoded with the old events' learned shapes (a Struct generated per old tag
from the field names seen in earlier records, refusing any field more or fewer), again in
one call; and when that fails too (a shape not seen yet), untyped, each event dispatched on
its tag (current tags converted to their types with ``msgspec.convert``, old ones given to
their upcaster), and the shapes learned from it.
An event of an ``array_like`` type arrives at its upcaster as a dict from position to value.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from storage.errors import ReplayFailed

__all__ = ["MAX_CHAIN", "UnknownTag", "Upcasting", "check_upcasters", "unknown_tag"]

MAX_CHAIN = 64
"""Most upcasts one event may go through (a cycle of old tags is a mistake, not a loop)."""

Upcaster = Callable[[dict[Any, Any]], Any]

_UNTYPED = msgspec.msgpack.Decoder()  # a decoder object: a fifth quicker than the function


class UnknownTag(Exception):
    """A record's event has a tag that is neither current nor upcast (for ``decode_chunk``)."""

    def __init__(self, tag: object) -> None:
        super().__init__(tag)
        self.tag = tag


def check_upcasters(actor_class: type, types: Sequence[type[msgspec.Struct]]) -> None:
    """Refuse ``upcasters`` that could not work: not a mapping, not callables, a current tag.

    Raises:
        TypeError: What is wrong and what to write instead.
    """
    upcasters = getattr(actor_class, "upcasters", None)
    if not upcasters:
        return
    name = actor_class.__name__
    if not isinstance(upcasters, Mapping):
        msg = f"{name}.upcasters must be a dict of old tag -> function, got {upcasters!r:.80}"
        raise TypeError(msg)
    current = {event_type.__struct_config__.tag: event_type for event_type in types}
    for tag, upcaster in upcasters.items():
        if tag in current:
            msg = (
                f"{name}.upcasters maps {tag!r}, the tag of its current event type "
                f"{current[tag].__name__}: map only tags that no current type has"
            )
            raise TypeError(msg)
        if not callable(upcaster):
            msg = f"{name}.upcasters[{tag!r}] must be a function of the old event's fields"
            raise TypeError(msg)


class Upcasting:
    """Decodes records whose events may have old tags, into current events."""

    __slots__ = (
        "actor_name",
        "current",
        "exact",
        "learned",
        "shadows",
        "shapes",
        "tag_field",
        "types",
        "upcasters",
    )

    def __init__(
        self,
        actor_name: str,
        types: Sequence[type[msgspec.Struct]],
        upcasters: Mapping[Any, Upcaster],
    ) -> None:
        self.actor_name = actor_name
        self.types = tuple(types)
        self.upcasters = dict(upcasters)
        self.current = {event_type.__struct_config__.tag: event_type for event_type in types}
        self.tag_field = types[0].__struct_config__.tag_field if types else "type"
        self.exact = frozenset(self.types)  # ``type(x) in exact``: the loop's quick check
        # Old events' shapes, learned from the records read so far: with a Struct for each
        # (generated, exact: no field more or fewer), a chunk decodes typed in one call.
        self.shapes: dict[Any, tuple[str, ...]] = {}
        self.shadows: dict[type, tuple[Any, Upcaster]] = {}
        self.learned: msgspec.msgpack.Decoder[list[tuple[Any, ...]]] | None = None

    def decode_records(self, buffer: bytes, seqs: Sequence[int] | None) -> list[tuple[Any, ...]]:
        """Each record's events, upcast; an operation-id element is kept last, untouched.

        ``buffer`` is the records' payloads in one MessagePack array (one decoder call).
        The common case, an old event that one upcaster turns into one current event, takes
        a dict lookup and the upcaster's call: the loop is written out for it.

        Raises:
            UnknownTag: An event's tag is neither current nor in the upcasters.
            msgspec.DecodeError: A record is not MessagePack, or an event does not convert.
            ReplayFailed: An upcaster raised, or returned something that is not current.
        """
        learned = self.learned
        if learned is not None:
            try:
                typed = learned.decode(buffer)
            except msgspec.DecodeError:
                pass  # a shape not learned yet, or another one of a known tag
            else:
                return self._from_shadows(typed, seqs)
        records = _UNTYPED.decode(buffer)
        self._learn(records)
        upcasters, tag_field, exact = self.upcasters, self.tag_field, self.exact
        decoded: list[tuple[Any, ...]] = []
        append = decoded.append
        for events in records:
            # The common record, one old event one upcaster makes one current event of, is
            # written out: the general path below costs three times as much per record.
            if type(events) is list and len(events) == 1 and type(events[0]) is dict:
                raw = events[0]
                upcaster = upcasters.get(raw.get(tag_field))
                if upcaster is not None:
                    tag = raw.pop(tag_field)
                    try:
                        result = upcaster(raw)
                    except Exception as exc:
                        raise self._failed(seqs, len(decoded), raw, tag, exc) from exc
                    if type(result) in exact:
                        append((result,))
                    else:  # several, none, an older tag's dict, or a mistake
                        seq = seqs[len(decoded)] if seqs is not None else 0
                        append(tuple(self._expand(result, tag, seq, 0)))
                    continue
            append(self._record(events, seqs, len(decoded)))
        return decoded

    def _learn(self, records: Any, sample: int = 64) -> None:
        """Note the field names of old events in the first ``sample`` records.

        If any tag's are new, build the typed decoder that takes them (current, old and
        operation-id elements).
        """
        found = False
        for events in records[:sample] if type(records) is list else ():
            for raw in events if type(events) is list else ():
                if type(raw) is not dict:
                    continue
                tag = raw.get(self.tag_field)
                if tag in self.upcasters and tag not in self.shapes:
                    names = tuple(name for name in raw if name != self.tag_field)
                    if all(type(n) is str and n.isidentifier() for n in names):
                        self.shapes[tag] = names
                        found = True
        if not found:
            return
        shadows: dict[type, tuple[Any, Upcaster]] = {}
        for tag, names in self.shapes.items():
            shadow = msgspec.defstruct(
                f"Shadow_{len(shadows)}",
                [(name, Any) for name in names],
                tag=tag,
                tag_field=self.tag_field,
                forbid_unknown_fields=True,
                frozen=True,
            )
            shadows[shadow] = (tag, self.upcasters[tag])
        members = (*self.types, *shadows, msgspec.msgpack.Ext)
        union: Any = typing.Union[members]  # noqa: UP007
        self.shadows = shadows
        self.learned = msgspec.msgpack.Decoder(list[tuple[union, ...]])

    def _from_shadows(
        self, records: list[tuple[Any, ...]], seqs: Sequence[int] | None
    ) -> list[tuple[Any, ...]]:
        """Records decoded with the learned shapes: old events given to their upcasters."""
        shadows, exact = self.shadows, self.exact
        asdict = msgspec.structs.asdict
        decoded: list[tuple[Any, ...]] = []
        append = decoded.append
        for events in records:
            if len(events) == 1:
                known = shadows.get(type(events[0]))
                if known is None:
                    append(events)  # current, or an operation id alone
                    continue
                tag, upcaster = known
                try:
                    result = upcaster(asdict(events[0]))
                except Exception as exc:
                    raise self._failed(seqs, len(decoded), events[0], tag, exc) from exc
                if type(result) in exact:
                    append((result,))
                    continue
                seq = seqs[len(decoded)] if seqs is not None else 0
                append(tuple(self._expand(result, tag, seq, 0)))
                continue
            seq = seqs[len(decoded)] if seqs is not None else 0
            found: list[Any] = []
            for event in events:
                known = shadows.get(type(event))
                if known is None:
                    found.append(event)
                    continue
                tag, upcaster = known
                try:
                    result = upcaster(asdict(event))
                except Exception as exc:
                    raise self._failed(seqs, len(decoded), event, tag, exc) from exc
                found.extend(self._expand(result, tag, seq, 0))
            append(tuple(found))
        return decoded

    def _record(self, events: Any, seqs: Sequence[int] | None, index: int) -> tuple[Any, ...]:
        """One record's events, any mix of current, old and operation-id elements."""
        if type(events) is not list:
            msg = "a record is not an array of events"
            raise msgspec.DecodeError(msg)
        seq = seqs[index] if seqs is not None else 0
        found: list[Any] = []
        for raw in events:
            if isinstance(raw, msgspec.msgpack.Ext):  # a retried command's operation id
                found.append(raw)
                continue
            found.extend(self._upcast(raw, seq, 0))
        return tuple(found)

    def _failed(
        self, seqs: Sequence[int] | None, index: int, raw: Any, tag: Any, exc: Exception
    ) -> ReplayFailed:
        seq = seqs[index] if seqs is not None else 0
        return ReplayFailed(self.actor_name, seq, raw, exc, f"the upcaster of {tag!r}")

    def _upcast(self, raw: Any, seq: int, depth: int) -> list[Any]:
        tag, fields = self._split(raw)
        event_type = self.current.get(tag)
        if event_type is not None:
            return [msgspec.convert(raw, event_type)]
        upcaster = self.upcasters.get(tag)
        if upcaster is None:
            raise UnknownTag(tag)
        if depth >= MAX_CHAIN:
            self._refuse(seq, tag, f"a chain of more than {MAX_CHAIN} upcasts (a cycle?)")
        try:
            result = upcaster(fields)
        except Exception as exc:
            raise ReplayFailed(self.actor_name, seq, raw, exc, f"the upcaster of {tag!r}") from exc
        return self._expand(result, tag, seq, depth)

    def _expand(self, result: Any, tag: Any, seq: int, depth: int) -> list[Any]:
        """What an upcaster returned, as current events (older tags' dicts upcast in turn)."""
        produced = result if isinstance(result, list) else [result]
        found: list[Any] = []
        for item in produced:
            if isinstance(item, self.types):
                found.append(item)
            elif isinstance(item, dict) and self.tag_field in item:
                found.extend(self._upcast(item, seq, depth + 1))  # an older tag, in turn
            else:
                self._refuse(seq, tag, f"returned {item!r:.80}, not a current event")
        return found

    def _split(self, raw: Any) -> tuple[Any, dict[Any, Any]]:
        """An encoded event's tag and its other fields (by position, for an array)."""
        if isinstance(raw, dict):
            fields = dict(raw)
            return fields.pop(self.tag_field, None), fields
        if isinstance(raw, list) and raw:
            return raw[0], dict(enumerate(raw[1:]))
        return None, {}

    def _refuse(self, seq: int, tag: Any, what: str) -> None:
        problem = TypeError(what)
        raise ReplayFailed(self.actor_name, seq, tag, problem, f"the upcaster of {tag!r}")


def unknown_tag(payload: bytes, types: Sequence[type[msgspec.Struct]]) -> Any:
    """The first tag in the record ``payload`` that no type of ``types`` has, or None.

    None too when the record is not an array of tagged events at all (damage, not an old
    event type).
    """
    try:
        events = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError:
        return None
    if not isinstance(events, list) or not types:
        return None
    upcasting = Upcasting("", types, {})
    for raw in events:
        if isinstance(raw, msgspec.msgpack.Ext):
            continue
        tag, _ = upcasting._split(raw)
        if tag is not None and tag not in upcasting.current:
            return tag
    return None
