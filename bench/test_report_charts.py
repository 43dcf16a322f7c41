"""The PNG charts of ``actorkv bench`` say what their axes and bars claim.

Built from hand-made rows (no measurement), so they run in the smoke run in well under a
second: ratio bars on a linear axis from 0 with the 1.0 line, hatches that show, recovery as
seconds against records, the sweep's ops/s from 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.driver import report
from bench.driver.core import Row, RunContext

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")

DURABLE = "fsync per commit"
NOT_DURABLE = "no fsync (OS decides)"


def throughput_rows() -> list[Row]:
    rows = [
        Row("actorkv", "fillsync", DURABLE, 4_000.0),
        Row("actorkv", "fillsync", NOT_DURABLE, 10_000.0),
        Row("lmdb", "fillsync", DURABLE, 4_800.0),
        Row("lmdb", "fillsync", NOT_DURABLE, 300_000.0),
        Row("diskcache", "readseq", NOT_DURABLE, 50_000.0),
        Row("sqlite3", "readseq", NOT_DURABLE, 20_000.0),
    ]
    report.fill_ratios(rows)
    return rows


def recovery_rows() -> list[Row]:
    return [
        Row(
            "actorkv",
            "recovery",
            "n/a (read path)",
            ops_per_s=records / seconds,
            ops=records,
            seconds=seconds,
            extra={"log_records": records, "log_bytes": records * 146, "open_seconds": seconds},
        )
        for records, seconds in ((100_000, 0.27), (10_000, 0.03))
    ]


def sweep_rows() -> list[Row]:
    return [
        Row(engine, "group_commit_sweep", DURABLE, rate, extra={"writers": writers})
        for writers in (1, 2, 4)
        for engine, rate in (("actorkv", 4_000.0 * writers), ("sqlite3", 5_000.0 / writers))
    ]


def test_throughput_bars_are_ratios_on_a_linear_axis_from_zero_with_a_line_at_one():
    figure = report.throughput_figure(plt, throughput_rows())
    fillsync = figure.axes[0]
    assert fillsync.get_title() == "fillsync"
    assert fillsync.get_xscale() == "linear"
    assert fillsync.get_xlim()[0] == 0.0
    widths = [patch.get_width() for patch in fillsync.patches]
    # actorkv durable, actorkv not durable, lmdb durable, lmdb not durable
    assert widths == pytest.approx([1.0, 1.0, 1.2, 30.0])
    assert [list(line.get_xdata()) for line in fillsync.get_lines()] == [[1.0, 1.0]]
    texts = [text.get_text() for text in fillsync.texts]
    assert " 30.0x (300k ops/s)" in texts
    plt.close(figure)


def test_not_durable_bars_are_hatched_with_a_visible_edge():
    figure = report.throughput_figure(plt, throughput_rows())
    bars = figure.axes[0].patches
    assert [str(bar.get_hatch() or "") for bar in bars] == ["", "//", "", "//"]
    assert all(bar.get_edgecolor()[3] > 0 for bar in bars)  # hatches take the edge colour
    plt.close(figure)


def test_a_row_without_an_actorkv_reference_gets_no_bar_but_its_ops():
    figure = report.throughput_figure(plt, throughput_rows())
    readseq = figure.axes[1]
    assert [patch.get_width() for patch in readseq.patches] == [0.0, 0.0]
    assert " 50k ops/s, no actorkv row to compare" in [text.get_text() for text in readseq.texts]
    plt.close(figure)


def test_recovery_chart_plots_open_seconds_against_log_records_on_linear_axes():
    figure = report.recovery_figure(plt, recovery_rows())
    (axis,) = figure.axes
    measured = axis.get_lines()[-1]
    assert list(measured.get_xdata()) == [10_000, 100_000]
    assert list(measured.get_ydata()) == [0.03, 0.27]
    assert (axis.get_xscale(), axis.get_yscale()) == ("linear", "linear")
    assert axis.get_xlim()[0] == axis.get_ylim()[0] == 0.0
    assert "open time, s" in axis.get_ylabel()
    assert "records" in axis.get_xlabel()
    plt.close(figure)


def test_sweep_ops_per_second_axis_is_linear_from_zero():
    figure = report.sweep_figure(plt, sweep_rows())
    rate = figure.axes[0]
    assert rate.get_xscale() == "log"
    assert rate.get_yscale() == "linear"
    assert rate.get_ylim()[0] == 0.0
    plt.close(figure)


def test_write_charts_writes_one_file_per_chart_and_no_throughput_chart_for_recovery(
    tmp_path: Path,
):
    groups = [
        ("dbbench", throughput_rows()),
        ("group_commit_sweep", sweep_rows()),
        ("recovery", recovery_rows()),
    ]
    written = report.write_charts(tmp_path, groups, RunContext(records=1, ops=1))
    assert [path.name for path in written] == [
        "throughput_dbbench.png",
        "group_commit_sweep.png",
        "recovery.png",
    ]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written)


def test_recovery_chart_draws_one_line_per_variant_and_the_live_keys_as_a_reference():
    rows = [
        Row(
            "actorkv",
            "recovery",
            "n/a (read path)",
            ops_per_s=1.0,
            extra={"variant": variant, "log_records": records, "open_seconds": seconds},
        )
        for variant, records, seconds in (
            ("no snapshots", 1_000_000, 3.0),
            ("no snapshots", 2_000_000, 6.0),
            ("defaults", 1_000_000, 0.4),
            ("defaults", 2_000_000, 0.5),
            ("live keys only", 10_000, 0.05),
        )
    ]
    figure = report.recovery_figure(plt, rows)
    (axis,) = figure.axes
    measured = {line.get_label(): line for line in axis.get_lines() if line.get_marker() == "o"}
    assert sorted(measured) == ["defaults", "no snapshots"]
    assert list(measured["no snapshots"].get_ydata()) == [3.0, 6.0]
    assert list(measured["defaults"].get_xdata()) == [1_000_000, 2_000_000]
    reference = [line for line in axis.get_lines() if line.get_linestyle() == ":"]
    assert len(reference) == 1
    assert list(reference[0].get_ydata()) == [0.05, 0.05]
    plt.close(figure)
