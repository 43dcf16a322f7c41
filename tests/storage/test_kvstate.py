"""KVState: the committed and pending layers, versions, the expiry index, and scans."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.kvstate import Entry, KVState


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def committed(state: KVState, **puts: float | None) -> KVState:
    """Stage and commit a put of each key (value = key) with the given expires_at."""
    for key, expires_at in puts.items():
        state.stage_put(key, key.encode(), 1, expires_at)
    state.commit()
    state._check()
    return state


def test_staged_writes_are_invisible_to_readers_until_commit():
    state = committed(KVState(Clock()), a=None)
    state.stage_put("b", b"1", 2, None)
    state.stage_delete("a")
    assert state.get("b") is None
    assert state.get("a") is not None
    assert [k for k, _ in state.scan()] == ["a"]
    assert state.get_many(["a", "b"]).keys() == {"a"}
    assert len(state) == 1
    assert state.current("b", 0.0) == Entry(b"1", 1, 2, None)
    assert state.current("a", 0.0) is None  # the writer sees its own pending delete
    state.commit()
    assert state.pending == {}
    assert [k for k, _ in state.scan()] == ["b"]
    assert state.get("b") == Entry(b"1", 1, 2, None)
    state._check()


def test_discard_drops_every_staged_change():
    state = committed(KVState(Clock()), a=None)
    state.stage_put("a", b"2", 2, 500.0)
    state.stage_put("b", b"2", 2, None)
    state.discard()
    assert state.pending == {}
    state.commit()
    assert state.get("a") == Entry(b"a", 1, 1, None)
    assert state.get("b") is None
    assert list(state.expiring) == []
    state._check()


def test_versions_count_writes_since_the_key_last_did_not_exist():
    state = KVState(Clock())
    assert [state.stage_put("k", b"", seq, None).version for seq in (1, 2)] == [1, 2]
    state.commit()
    assert state.stage_put("k", b"", 3, None).version == 3
    state.stage_delete("k")
    assert state.stage_put("k", b"", 4, None).version == 1
    state.commit()
    assert state.get("k") == Entry(b"", 1, 4, None)


def test_an_expired_entry_counts_its_version_on_until_it_is_deleted():
    clock = Clock()
    state = committed(KVState(clock), k=101.0)
    clock.now = 200.0
    assert state.current("k", clock.now) is None
    assert state.stage_put("k", b"", 2, None).version == 2  # replay never reads the clock


def test_the_expiry_index_follows_overwrites_and_deletes():
    clock = Clock()
    state = committed(KVState(clock), a=150.0, b=120.0, c=None)
    assert list(state.expiring) == [(120.0, "b"), (150.0, "a")]
    committed(state, a=None)
    assert list(state.expiring) == [(120.0, "b")]
    state.stage_delete("b")
    state.stage_put("c", b"", 2, 130.0)
    state.commit()
    assert list(state.expiring) == [(130.0, "c")]
    state.stage_delete("missing")
    state.commit()
    state._check()


def test_has_expired_and_expired_keys_include_the_exact_instant():
    clock = Clock()
    state = committed(KVState(clock), a=110.0, b=120.0, c=120.0, d=None)
    assert not state.has_expired(109.9)
    assert state.expired_keys(109.9) == []
    assert state.has_expired(110.0)
    assert state.expired_keys(110.0) == ["a"]
    assert state.expired_keys(math.nextafter(120.0, 0.0)) == ["a"]
    assert state.expired_keys(120.0) == ["a", "b", "c"]
    assert state.expired_keys(1e300) == ["a", "b", "c"]
    assert not KVState(clock).has_expired(1e300)


def test_len_and_reads_skip_expired_keys():
    clock = Clock()
    state = committed(KVState(clock), a=110.0, b=None, c=120.0)
    assert len(state) == 3
    clock.now = 110.0
    assert len(state) == 2
    assert state.get("a") is None
    assert state.get_many(["a", "b", "c"]).keys() == {"b", "c"}
    clock.now = 120.0
    assert len(state) == 1
    assert [k for k, _ in state.scan()] == ["b"]


def test_scan_bounds_reverse_and_limit_count_only_live_keys():
    clock = Clock()
    state = committed(KVState(clock), a=110.0, b=None, c=110.0, d=None, e=None)
    clock.now = 110.0
    assert [k for k, _ in state.scan()] == ["b", "d", "e"]
    assert [k for k, _ in state.scan(limit=1)] == ["b"]
    assert [k for k, _ in state.scan(limit=0)] == []
    assert [k for k, _ in state.scan(reverse=True, limit=2)] == ["e", "d"]
    assert [k for k, _ in state.scan("b", "e")] == ["b", "d"]
    assert [k for k, _ in state.scan("bb", None, reverse=True)] == ["e", "d"]
    assert [k for k, _ in state.scan(None, "d")] == ["b"]
    assert list(state.scan("e", "b")) == []


keys = st.sampled_from(["a", "b", "c", "d", "e"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.none() | st.integers(101, 110).map(float)),
        st.tuples(st.just("delete"), keys, st.none()),
        st.tuples(st.just("commit"), st.none(), st.none()),
        st.tuples(st.just("discard"), st.none(), st.none()),
        st.tuples(st.just("tick"), st.none(), st.integers(0, 3).map(float)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_random_operations_keep_every_invariant(ops: list[tuple[str, str | None, float | None]]):
    clock = Clock()
    state = KVState(clock)
    model: dict[str, tuple[int, int, float | None]] = {}  # key -> version, seq, expires_at
    pending: dict[str, tuple[int, int, float | None] | None] = {}
    for seq, (op, key, arg) in enumerate(ops, 1):
        if op == "put":
            previous = pending[key] if key in pending else model.get(key)
            version = 1 if previous is None else previous[0] + 1
            assert state.stage_put(key, b"v", seq, arg).version == version
            pending[key] = (version, seq, arg)
        elif op == "delete":
            state.stage_delete(key)
            pending[key] = None
        elif op == "commit":
            state.commit()
            for k, entry in pending.items():
                if entry is None:
                    model.pop(k, None)
                else:
                    model[k] = entry
            pending.clear()
        elif op == "discard":
            state.discard()
            pending.clear()
        else:
            clock.now += arg
        state._check()
        now = clock.now
        live = {k: e for k, e in model.items() if e[2] is None or e[2] > now}
        assert len(state) == len(live)
        assert [(k, (e.version, e.seq, e.expires_at)) for k, e in state.scan()] == sorted(
            live.items()
        )
        expired = sorted((e[2], k) for k, e in model.items() if k not in live)
        assert state.expired_keys(now) == [k for _, k in expired]
        assert state.has_expired(now) == bool(expired)
        for k in "abcde":
            entry = state.get(k)
            assert (entry and (entry.version, entry.seq, entry.expires_at)) == live.get(k)
