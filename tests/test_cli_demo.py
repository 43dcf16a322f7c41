"""`actorkv demo`: it replays its log through the key spaces' own fold, expiries included."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cli import demo
from storage import SegmentedLog
from storage.codec import Expired, decode_event


def test_the_demo_reads_back_every_event_including_an_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo(tmp_path / "log", 20) == 0
    out = capsys.readouterr().out
    assert "OK: every event read back" in out
    assert "19 keys (expected 19)" in out
    with SegmentedLog.open(tmp_path / "log") as log:
        events = [decode_event(payload) for _, payload in log.read()]
    assert any(isinstance(event, Expired) for event in events)
