"""kill -9 of a store mid-shipping, then restore: a consistent prefix of what was acknowledged.

The child puts and ships continuously (small segments, a 10 ms interval, so a kill lands
inside an upload most of the time). After the kill, a restore from the archive must verify,
use no half-uploaded object, and equal the killed store's own recovered log at the restored
seq; and every write acknowledged before the last round the archive recorded is in it.
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path

import pytest

from actors import Store
from storage import open_archive, restore
from storage.shipping import read_uploads
from tests.reliability.children import reap, start_child

WORKLOAD = Path(__file__).with_name("ship_workload.py")


@pytest.mark.parametrize("round_number", range(3))
def test_restore_after_a_kill_mid_upload(
    tmp_path: Path, archive_url: str, round_number: int
) -> None:
    source = tmp_path / "source"
    child, watchdog = start_child(
        [sys.executable, str(WORKLOAD), str(source), archive_url], tmp_path / "stderr"
    )
    acked: list[int] = []
    try:
        stop_after = random.Random(round_number).randint(150, 400)
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= stop_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        reap(child, watchdog)
    assert len(acked) >= 150, (tmp_path / "stderr").read_text()
    shipped = max(
        (u.last_seq for u in read_uploads(open_archive(archive_url), "keyspaces/k/")), default=0
    )
    report = restore(archive_url, tmp_path / "restored")
    restored_seq = report.seqs["keyspaces/k"]
    uploads = read_uploads(open_archive(archive_url), "keyspaces/k/")
    summary = [(u.kind, u.first_seq, u.last_seq) for u in uploads]
    assert restored_seq >= shipped, summary  # every recorded record is restorable
    assert restored_seq <= acked[-1] + 1  # nothing beyond what the writer appended
    with Store.open(tmp_path / "restored") as restored, Store.open(source) as killed:
        expected = dict(killed.keyspace("k").at(restored_seq).items())
        assert dict(restored.keyspace("k").items()) == expected
