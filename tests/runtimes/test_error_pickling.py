"""Errors cross processes whole: a hosted key space's refusal reaches its caller as itself."""

from __future__ import annotations

import pickle

import pytest

from storage.errors import (
    ActorKVError,
    ArchiveLeased,
    CorruptLog,
    HistoryUnavailable,
    InvalidOption,
    ReplayFailed,
    StoreLocked,
    UniqueViolation,
    VersionConflict,
)


@pytest.mark.parametrize(
    "error",
    [
        VersionConflict("k", 1, 2),
        UniqueViolation("by_email", "a@b", "k2", "k1", 3),
        CorruptLog("/data/keyspaces/k", 42, "bad crc"),
        HistoryUnavailable("k", 3, 10),
        StoreLocked("/data", 1234),
        ArchiveLeased("leased", "host-1", 99.0),
        ReplayFailed("k", 7, None, ValueError("boom")),
        InvalidOption("bad option"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_error_pickles_with_its_message_and_attributes(error: ActorKVError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert {k: str(v) for k, v in vars(copy).items()} == {k: str(v) for k, v in vars(error).items()}
