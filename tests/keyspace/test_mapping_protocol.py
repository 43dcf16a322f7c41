"""CPython's own mapping-protocol tests (``test.mapping_tests``) run against a KeySpace.

Each mapping is a fresh key space in a fresh store under tmp_path; the stores are closed in
tearDown. Protocol tests that cannot apply to a str-keyed durable map are skipped one by
one, each with its reason, and the ones that only fail for int keys are restated with str
keys below.
"""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import Any

import pytest

from actors import InvalidKey, KeySpace, Store

mapping_tests = pytest.importorskip(
    "test.mapping_tests", reason="CPython's test package (test.mapping_tests) is not installed"
)

INT_KEYS = "uses int keys; a KeySpace takes str keys only (restated with str keys below)"
NO_COPY = "KeySpace has no copy() or fromkeys(): it is a handle on a durable map, not a dict"


class KeySpaceProtocolTests(mapping_tests.TestMappingProtocol):
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self.tmp = tmp_path

    def setUp(self) -> None:
        self.stores: list[Store] = []
        # An instance attribute, so that self.type2test(...) is not bound as a method.
        self.type2test = self.open_keyspace

    def tearDown(self) -> None:
        for store in self.stores:
            store.close()

    def open_keyspace(self, data: Any = (), **kwargs: Any) -> KeySpace:
        store = Store.open(self.tmp / f"store{len(self.stores)}")
        self.stores.append(store)
        keyspace = store.keyspace("mapping")
        keyspace.update(data, **kwargs)
        return keyspace

    def _reference(self) -> dict[str, str]:
        # The default has a tuple value, which MessagePack gives back as a list.
        return {"1": "2", "key1": "value1", "key2": "value2"}

    # -- inapplicable protocol tests, each skipped for its reason -----------------------------

    @unittest.skip(INT_KEYS)
    def test_values(self) -> None: ...

    @unittest.skip(INT_KEYS)
    def test_items(self) -> None: ...

    @unittest.skip(INT_KEYS)
    def test_clear(self) -> None: ...

    @unittest.skip(INT_KEYS)
    def test_update(self) -> None: ...

    @unittest.skip(NO_COPY)
    def test_fromkeys(self) -> None: ...

    @unittest.skip(NO_COPY)
    def test_copy(self) -> None: ...

    @unittest.skip(
        "mutates a value in place (setdefault(k, []).append(3)); a durable map returns a "
        "decoded copy on every read, so in-place mutation cannot reach the store"
    )
    def test_setdefault(self) -> None: ...

    @unittest.skip(NO_COPY + "; its copy-free half is restated with str keys below")
    def test_popitem(self) -> None: ...

    # -- the same checks with str keys ---------------------------------------------------------

    def test_values_and_items_with_str_keys(self) -> None:
        mapping_tests.BasicTestMappingProtocol.test_values(self)
        mapping_tests.BasicTestMappingProtocol.test_items(self)
        d = self._full_mapping({"1": 2})
        assert list(d.values()) == [2]
        assert list(d.items()) == [("1", 2)]

    def test_clear_with_str_keys(self) -> None:
        d = self._full_mapping({"1": 1, "2": 2, "3": 3})
        d.clear()
        assert d == {}
        assert len(d) == 0
        with pytest.raises(TypeError):
            d.clear(None)

    def test_update_with_str_keys(self) -> None:
        mapping_tests.BasicTestMappingProtocol.test_update(self)
        d = self._empty_mapping()
        d.update({"1": 100})
        d.update({"2": 20})
        d.update({"1": 1, "2": 2, "3": 3})
        assert d == {"1": 1, "2": 2, "3": 3}
        d.update(x=1, y=2)
        d.update([("z", 100), ("y", 20)], z=3)
        assert d == {"1": 1, "2": 2, "3": 3, "x": 1, "y": 20, "z": 3}
        d = self._full_mapping({"1": 3, "2": 4})
        d.update(self._full_mapping({"1": 2, "3": 4, "5": 6}).items())
        assert d == {"1": 2, "2": 4, "3": 4, "5": 6}
        with pytest.raises(InvalidKey):
            d.update({1: 1})

    def test_setdefault_without_in_place_mutation(self) -> None:
        mapping_tests.BasicTestMappingProtocol.test_setdefault(self)
        d = self._empty_mapping()
        assert d.setdefault("key0") is None
        assert d.setdefault("key0", []) is None
        assert d.setdefault("key", [3]) == [3]
        assert d.setdefault("key", [4]) == [3]
        assert d == {"key0": None, "key": [3]}

    def test_popitem_empties_the_map_in_key_order(self) -> None:
        mapping_tests.BasicTestMappingProtocol.test_popitem(self)
        for size in (1, 2, 17):
            a = self._full_mapping({repr(i): i for i in range(size)})
            popped = [a.popitem() for _ in range(size)]
            assert popped == sorted((repr(i), i) for i in range(size))
            assert not a
            with pytest.raises(KeyError):
                a.popitem()
