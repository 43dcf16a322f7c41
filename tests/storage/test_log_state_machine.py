"""SegmentedLog against a list of payloads, with reopen, power-loss and truncation steps.

``AlwaysLogMachine`` runs under ``fsync="always"``: every acknowledged append must survive a
simulated power loss, so the model never shrinks. ``NeverLogMachine`` runs under
``fsync="never"``: a power loss may keep any number of unsynced bytes (cut anywhere, or
zero-filled), and the reopened log must then hold a gapless prefix of the model that ends on
a batch boundary and keeps every sealed segment.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from storage._format import parse_segment_name
from storage.log import SegmentedLog
from tests.storage.faults import DurabilityTracker

SEGMENT_BYTES = 4096

small_payloads = st.binary(max_size=200)
batches = st.lists(small_payloads, max_size=6)

MACHINE_SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None)


def segment_bases(directory: Path) -> list[int]:
    bases = [parse_segment_name(p.name) for p in directory.iterdir()]
    return sorted(base for base in bases if base is not None)


class _LogMachine(RuleBasedStateMachine):
    fsync = "always"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="actorkv-machine-"))
        self.tracker = DurabilityTracker().install()
        self.model: list[bytes] = []
        self.log = self._open()

    def _open(self) -> SegmentedLog:
        return SegmentedLog.open(self.directory, segment_bytes=SEGMENT_BYTES, fsync=self.fsync)

    def teardown(self) -> None:
        try:
            self.log.close()
        finally:
            self.tracker.uninstall()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _append_batch(self, payloads: list[bytes]) -> None:
        last = self.log.append_batch(payloads)
        self.model.extend(payloads)
        assert last == len(self.model)

    @rule(payload=small_payloads)
    def append(self, payload: bytes) -> None:
        assert self.log.append(payload) == len(self.model) + 1
        self.model.append(payload)

    @rule(payloads=batches)
    def append_batch(self, payloads: list[bytes]) -> None:
        self._append_batch(payloads)

    @rule(size=st.integers(min_value=1500, max_value=3000), fill=st.binary(min_size=1, max_size=1))
    def append_big(self, size: int, fill: bytes) -> None:
        """A record over a third of a segment: rolls come every few of these."""
        self._append_batch([fill * size])

    @rule()
    def reopen(self) -> None:
        first_seq = self.log.first_seq
        self.log.close()
        self.log = self._open()
        assert self.log.recovery is None
        assert self.log.first_seq == first_seq

    @rule(from_seq=st.integers(min_value=1, max_value=200))
    def read_from(self, from_seq: int) -> None:
        start = max(from_seq, self.log.first_seq)
        expected = [(seq, self.model[seq - 1]) for seq in range(start, len(self.model) + 1)]
        assert list(self.log.read(from_seq)) == expected

    @rule(seq=st.integers(min_value=0, max_value=250))
    def truncate_before(self, seq: int) -> None:
        first_before = self.log.first_seq
        bases_before = segment_bases(self.directory)
        dropped = self.log.truncate_before(seq)
        first_seq = self.log.first_seq
        bases = segment_bases(self.directory)
        assert bases == bases_before[dropped:]
        assert first_seq >= first_before
        assert dropped == 0 or first_seq <= seq
        assert bases[-1] == bases_before[-1]  # the active segment is never dropped
        if len(bases) > 1:  # whole segments below seq are all gone
            assert bases[1] > seq

    @invariant()
    def last_seq_counts_the_model(self) -> None:
        assert self.log.last_seq == len(self.model)

    @invariant()
    def read_returns_the_model_from_first_seq(self) -> None:
        first_seq = self.log.first_seq
        assert 1 <= first_seq <= len(self.model) + 1
        expected = list(enumerate(self.model, 1))[first_seq - 1 :]
        assert list(self.log.read()) == expected

    @invariant()
    def segments_on_disk_match_the_log(self) -> None:
        bases = segment_bases(self.directory)
        assert bases[0] == self.log.first_seq
        assert bases == sorted(set(bases))
        assert bases[-1] <= len(self.model) + 1


class AlwaysLogMachine(_LogMachine):
    fsync = "always"

    @rule()
    def power_loss(self) -> None:
        """Close, lose every unsynced byte and directory entry, reopen: nothing is lost."""
        first_seq = self.log.first_seq
        self.tracker.cut_power()  # right after the last acknowledgment
        self.log.close()
        self.tracker.crash()
        self.log = self._open()
        assert self.log.recovery is None
        assert self.log.first_seq == first_seq


class NeverLogMachine(_LogMachine):
    fsync = "never"

    def __init__(self) -> None:
        super().__init__()
        self.batch_ends = {0}

    def _append_batch(self, payloads: list[bytes]) -> None:
        super()._append_batch(payloads)
        self.batch_ends.add(len(self.model))

    @rule(payload=small_payloads)
    def append(self, payload: bytes) -> None:
        self._append_batch([payload])

    @rule(fraction=st.floats(min_value=0, max_value=1), zero_fill=st.booleans())
    def power_loss(self, fraction: float, zero_fill: bool) -> None:
        """Keep a random share of the unsynced bytes of each file; the rest is lost."""
        sealed = segment_bases(self.directory)[-1] - 1  # a roll fsyncs the segment it seals
        self.tracker.cut_power()
        self.log.close()
        self.tracker.crash(
            keep=lambda _path, synced, size: synced + int((size - synced) * fraction),
            zero_fill=zero_fill,
        )
        self.log = self._open()
        survived = self.log.last_seq
        assert sealed <= survived <= len(self.model)
        assert survived in self.batch_ends, "a batch was cut in half"
        expected = list(enumerate(self.model[:survived], 1))[self.log.first_seq - 1 :]
        assert list(self.log.read()) == expected
        del self.model[survived:]
        self.batch_ends = {end for end in self.batch_ends if end <= survived}


def test_log_matches_a_list_under_fsync_always() -> None:
    run_state_machine_as_test(AlwaysLogMachine, settings=MACHINE_SETTINGS)


def test_log_keeps_a_batch_aligned_prefix_after_power_loss_under_fsync_never() -> None:
    run_state_machine_as_test(NeverLogMachine, settings=MACHINE_SETTINGS)
