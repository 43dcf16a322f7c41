"""A key space's value_type may change: older values are read through value_upcaster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import Index, InvalidOption, InvalidValue, Store, ValueTypeMismatch


class UserV1(msgspec.Struct):
    name: str  # "first last"


class User(msgspec.Struct):
    first: str
    last: str
    age: int = 0


def from_v1(old: Any) -> dict[str, Any]:
    first, _, last = old["name"].partition(" ")
    return {"first": first, "last": last}


def write_v1(path: Path) -> None:
    with Store.open(path, recovery_budget=None) as store:
        users = store.keyspace("users", value_type=UserV1)
        users.put("ada", UserV1("Ada Lovelace"))
        users.put("alan", UserV1("Alan Turing"))


def test_older_values_are_read_through_the_upcaster_and_new_ones_are_current(
    tmp_path: Path,
) -> None:
    write_v1(tmp_path)
    with Store.open(tmp_path, recovery_budget=None) as store:
        users = store.keyspace("users", value_type=User, value_upcaster=from_v1)
        assert users.get("ada") == User("Ada", "Lovelace")
        assert users["alan"] == User("Alan", "Turing")
        assert dict(users.range()) == {
            "ada": User("Ada", "Lovelace"),
            "alan": User("Alan", "Turing"),
        }
        users.put("grace", User("Grace", "Hopper", 85))
        assert users.get("grace") == User("Grace", "Hopper", 85)  # current: not upcast
        with pytest.raises(InvalidValue):
            users.put("old", UserV1("Not Current"))  # writes take only the current type
        assert users.at(1).get("ada") == User("Ada", "Lovelace")  # the past, too
        assert [v.value for v in users.history("alan")] == [User("Alan", "Turing")]
    with Store.open(tmp_path, recovery_budget=None) as store, pytest.raises(ValueTypeMismatch):
        store.keyspace("users", value_type=User).get("ada")  # without it, an old value says so


def test_an_index_on_a_new_field_is_built_from_upcast_values(tmp_path: Path) -> None:
    write_v1(tmp_path)
    with Store.open(tmp_path, recovery_budget=None) as store:
        users = store.keyspace(
            "users",
            value_type=User,
            value_upcaster=from_v1,
            indexes={"by_last": Index(field="last")},
        )
        assert [key for _, key, _ in users.index("by_last").get("Turing")] == ["alan"]


def test_a_value_upcaster_needs_a_value_type_and_a_function(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        with pytest.raises(InvalidOption, match="value_upcaster"):
            store.keyspace("a", value_upcaster=from_v1)
        with pytest.raises(InvalidOption, match="value_upcaster"):
            store.keyspace("b", value_type=User, value_upcaster="from_v1")  # type: ignore[arg-type]
