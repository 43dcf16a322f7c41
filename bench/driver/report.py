"""Ratios to actorkv, the terminal table, results.json, report.md and PNG charts.

Ratios compare like with like: a peer row is divided by the actorkv row of the same
workload, the same durability class (durable: every acknowledged write fsynced; or not)
and the same parameters (``extra`` keys named in ``PARAM_KEYS``, such as ``writers``).
Where actorkv has no row of that class, the peer is compared with actorkv's durable row
and the row's notes say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .core import Row, RunContext

PARAM_KEYS = ("writers", "log_records", "accounts", "records")
"""``extra`` keys that are parameters of a measurement: rows match only if they agree."""

SWEEP = "group_commit_sweep"
RECOVERY = "recovery"
SNAPSHOT = "snapshot"  # one actorkv row (keys/s both ways): nothing to draw against
Groups = Sequence[tuple[str, list[Row]]]


def is_durable(row: Row) -> bool:
    """Whether ``row`` measured durable writes: ``extra["durable"]``, else from its label."""
    flag = row.extra.get("durable")
    if isinstance(flag, bool):
        return flag
    label = row.durability.lower()
    return not (
        label.startswith(("no ", "none", "not ")) or "os decides" in label or "in memory" in label
    )


def _params(row: Row) -> tuple[Any, ...]:
    return tuple(row.extra.get(key) for key in PARAM_KEYS)


def _add_note(row: Row, note: str) -> None:
    row.notes = f"{row.notes}; {note}" if row.notes else note


def fill_ratios(rows: Iterable[Row]) -> None:
    """Set ``ratio_to_actorkv`` on every row (peer ops/s over matched actorkv ops/s)."""
    rows = list(rows)
    actorkv: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        if row.engine == "actorkv":
            actorkv.setdefault((row.workload, _params(row), is_durable(row)), row)
    for row in rows:
        if row.engine == "actorkv":
            row.ratio_to_actorkv = 1.0
            continue
        durable = is_durable(row)
        key = (row.workload, _params(row))
        reference = actorkv.get((*key, durable))
        if reference is None:
            reference = actorkv.get((*key, True)) or actorkv.get((*key, False))
            if reference is None:
                continue
            _add_note(
                row,
                f"{'durable' if durable else 'not durable'}: ratio is against actorkv's "
                f"'{reference.durability}' row (no actorkv row of matching durability)",
            )
        if reference.ops_per_s > 0 and math.isfinite(reference.ops_per_s):
            row.ratio_to_actorkv = row.ops_per_s / reference.ops_per_s


# -- formatting -----------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}"


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _cells(row: Row) -> list[str]:
    return [
        row.engine,
        row.workload + (f" x{row.extra['writers']}" if "writers" in row.extra else ""),
        row.durability,
        fmt_rate(row.ops_per_s),
        fmt_us(row.p50_us),
        fmt_us(row.p99_us),
        fmt_ratio(row.ratio_to_actorkv),
    ]


def terminal_table(rows: Sequence[Row]) -> str:
    """A plain-text table: engine, workload, durability, ops/s, p50, p99, ratio."""
    header = ["engine", "workload", "durability", "ops/s", "p50 us", "p99 us", "vs actorkv"]
    body = [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {3, 4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


# -- files ----------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: map them to None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json(
    path: Path, machine: dict[str, Any], config: dict[str, Any], notices: list[str], rows: list[Row]
) -> None:
    """results.json: machine, config, notices and every row (as ``Row.as_dict``)."""
    document = {
        "machine": machine,
        "config": config,
        "notices": notices,
        "rows": [row.as_dict() for row in rows],
    }
    path.write_text(json.dumps(_finite(document), indent=2) + "\n")


def _headline(rows: Sequence[Row]) -> list[str]:
    """A workload x peer matrix of ratios (matched durability only)."""
    columns: dict[str, None] = {}
    cells: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.engine == "actorkv" or row.ratio_to_actorkv is None or _mismatched(row):
            continue
        column = f"{row.engine} ({durability_class(row)})"
        workload = row.workload + (f" x{row.extra['writers']}" if "writers" in row.extra else "")
        columns[column] = None
        cells[workload, column] = fmt_ratio(row.ratio_to_actorkv)
    workloads = list(dict.fromkeys(workload for workload, _ in cells))
    if not workloads:
        return []
    engines = list(dict.fromkeys(column.split(" (")[0] for column in columns))
    columns = dict.fromkeys(
        sorted(columns, key=lambda c: (engines.index(c.split(" (")[0]), "(durable)" not in c))
    )
    lines = [
        "| workload | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    lines += [
        f"| {workload} | " + " | ".join(cells.get((workload, c), "") for c in columns) + " |"
        for workload in workloads
    ]
    return lines


def write_markdown(
    path: Path,
    machine_line: str,
    config: dict[str, Any],
    notices: list[str],
    groups: Groups,
    charts: list[Path],
) -> None:
    """report.md: machine, config, notices, headline ratios, a table per workload, charts."""
    rows = [row for _, group_rows in groups for row in group_rows]
    settings = ", ".join(f"{key}={value}" for key, value in config.items() if key != "versions")
    versions = ", ".join(f"{key} {value}" for key, value in config.get("versions", {}).items())
    out = [
        "# actorkv benchmark report",
        "",
        f"Machine: {machine_line}",
        "",
        f"Run: {settings}",
        "",
        f"Versions: {versions}",
        "",
        (
            "Ratio = peer ops/s / actorkv ops/s at the same workload and durability class "
            "(below 1: actorkv is faster). Durable = each acknowledged write was fsynced."
        ),
        "",
    ]
    if notices:
        out += ["## Notices", "", *(f"- {notice}" for notice in notices), ""]
    headline = _headline(rows)
    if headline:
        out += ["## Headline ratios (peer / actorkv, matched durability)", "", *headline, ""]
    for group, group_rows in groups:
        if not group_rows:
            continue
        out += [f"## {group}", ""]
        for workload in dict.fromkeys(row.workload for row in group_rows):
            out += [
                f"### {workload}",
                "",
                "| engine | durability | ops/s | p50 us | p99 us | p99.9 us | ratio | notes |",
                "|---|---|---:|---:|---:|---:|---:|---|",
            ]
            for row in group_rows:
                if row.workload != workload:
                    continue
                name = row.engine + (f" x{row.extra['writers']}" if "writers" in row.extra else "")
                out.append(
                    f"| {name} | {row.durability} | {fmt_rate(row.ops_per_s)} | "
                    f"{fmt_us(row.p50_us)} | {fmt_us(row.p99_us)} | {fmt_us(row.p999_us)} | "
                    f"{fmt_ratio(row.ratio_to_actorkv)} | {row.notes} |"
                )
            out.append("")
    if charts:
        out += ["## Charts", "", *(f"![{chart.stem}]({chart.name})" for chart in charts), ""]
    path.write_text("\n".join(out))


# -- charts ---------------------------------------------------------------------------------


def write_charts(directory: Path, groups: Groups, ctx: RunContext) -> list[Path]:
    """Write the PNG charts into ``directory``; returns their paths in the order written.

    One ``throughput_<group>.png`` per group (ratios to actorkv), ``group_commit_sweep.png``
    and ``recovery.png`` (open time against log size). Without matplotlib: a notice, no charts.
    """
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        ctx.notice("matplotlib is not installed: no charts (pip install matplotlib)")
        return []
    written = []
    for group, rows in groups:
        bars = [
            row for row in rows if row.workload not in {SWEEP, RECOVERY, SNAPSHOT} and _rated(row)
        ]
        if bars:
            path = directory / f"throughput_{group}.png"
            written.append(_save(plt, throughput_figure(plt, bars), path))
    sweep = [row for _, rows in groups for row in rows if row.workload == SWEEP]
    if sweep:
        written.append(_save(plt, sweep_figure(plt, sweep), directory / "group_commit_sweep.png"))
    recovery = [row for _, rows in groups for row in rows if row.workload == RECOVERY]
    if recovery:
        written.append(_save(plt, recovery_figure(plt, recovery), directory / "recovery.png"))
    return written


def _save(plt: Any, figure: Any, path: Path) -> Path:
    try:
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
    return path


def durability_class(row: Row) -> str:
    """``durable``, ``not durable``, or ``n/a`` for rows that write nothing."""
    if row.durability.lower().startswith("n/a"):
        return "n/a"
    return "durable" if is_durable(row) else "not durable"


def _rated(row: Row) -> bool:
    return row.ops_per_s > 0 and math.isfinite(row.ops_per_s)


def _mismatched(row: Row) -> bool:
    """Whether ``row``'s ratio is against an actorkv row of the other durability class."""
    return "ratio is against" in row.notes


def _label(row: Row) -> str:
    params = ", ".join(f"{row.extra[key]:,} {key}" for key in PARAM_KEYS[:3] if key in row.extra)
    label = f"{row.engine} ({durability_class(row)})" + (f"\n{params}" if params else "")
    return label + (" *" if _mismatched(row) else "")


def _short(value: float) -> str:
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


NOT_DURABLE_HATCH = "//"
"""Hatch of bars that measured writes not fsynced; drawn in the bar's black edge colour."""


_TEXT_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5}
"""Behind an annotation, so the reference line does not run through its digits."""


def throughput_figure(plt: Any, rows: list[Row]) -> Any:
    """Ratios to actorkv, one panel per workload, one bar per row, on a linear axis from 0.

    A bar's length is the row's ``ratio_to_actorkv`` (its ops/s over actorkv's at the same
    workload, parameters and durability class), so actorkv's own rows are 1.0 and a dashed
    line marks 1.0; each bar is annotated with the ratio and the absolute ops/s. Rows
    without a ratio get no bar, only the note. Not durable rows are hatched; ``*`` marks a
    ratio against actorkv's row of the other durability class.
    """
    from matplotlib.patches import Patch

    workloads = list(dict.fromkeys(row.workload for row in rows))
    columns = min(3, len(workloads))
    lines = math.ceil(len(workloads) / columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(5.2 * columns, 0.8 + 2.6 * lines), squeeze=False
    )
    engines = sorted({row.engine for row in rows}, key=lambda e: (e != "actorkv", e))
    colours = {engine: plt.cm.tab10(i % 10) for i, engine in enumerate(engines)}
    for axis, workload in zip(axes.flat, workloads, strict=False):
        chosen = [row for row in rows if row.workload == workload]
        chosen.sort(key=lambda r: (r.engine != "actorkv", r.engine, not is_durable(r)))
        ratios = [row.ratio_to_actorkv for row in chosen]
        axis.barh(
            range(len(chosen)),
            [ratio or 0.0 for ratio in ratios],
            color=[colours[row.engine] for row in chosen],
            edgecolor="black",  # hatches take the edge colour; without one they may not show
            linewidth=0.6,
            hatch=["" if is_durable(row) else NOT_DURABLE_HATCH for row in chosen],
        )
        axis.set_yticks(range(len(chosen)), [_label(row) for row in chosen], fontsize=7)
        axis.invert_yaxis()
        axis.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
        highest = max([1.0, *(ratio for ratio in ratios if ratio is not None)])
        axis.set_xlim(0.0, highest * 1.45)  # room for the annotations right of the bars
        for y, (row, ratio) in enumerate(zip(chosen, ratios, strict=True)):
            text = f"{_short(row.ops_per_s)} ops/s, no actorkv row to compare"
            if ratio is not None:
                text = f"{fmt_ratio(ratio)}x ({_short(row.ops_per_s)} ops/s)"
            axis.text(ratio or 0.0, y, f" {text}", va="center", fontsize=6, bbox=_TEXT_BOX)
        axis.set_title(workload, fontsize=9)
        axis.set_xlabel("ops/s ÷ actorkv ops/s (linear; 1 = actorkv)", fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
    for axis in list(axes.flat)[len(workloads) :]:
        axis.set_visible(False)
    key = [
        Patch(facecolor="white", edgecolor="black", label="durable (fsync per commit)"),
        Patch(facecolor="white", edgecolor="black", hatch=NOT_DURABLE_HATCH, label="not durable"),
    ]
    if any(_mismatched(row) for row in rows):
        key.append(Patch(color="none", label="* vs actorkv's row of the other durability"))
    inches = figure.get_figheight()  # the header is laid out in inches from the top
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.7 / inches))  # before the header
    figure.suptitle(
        "Throughput relative to actorkv at the same workload and durability\n"
        "right of the dashed line: faster than actorkv",
        y=1.0 - 0.08 / inches,
        fontsize=10,
    )
    figure.legend(
        handles=key,
        loc="upper center",
        bbox_to_anchor=(0.5, 1.0 - 0.52 / inches),
        ncols=3,
        fontsize=7,
        frameon=False,
    )
    return figure


def sweep_figure(plt: Any, rows: list[Row]) -> Any:
    """Durable puts/s and fsyncs per put against concurrent writers, y axes linear from 0.

    The writer counts double, so the x axis is log2; each ops/s point is annotated.
    """
    figure, (rate, fsyncs) = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(dict.fromkeys(f"{row.engine}: {row.durability}" for row in rows))
    annotated: list[tuple[float, float, Any]] = []
    for label in labels:
        series = sorted(
            (row for row in rows if f"{row.engine}: {row.durability}" == label),
            key=lambda r: r.extra.get("writers", 0),
        )
        writers = [row.extra.get("writers", 0) for row in series]
        rates = [row.ops_per_s for row in series]
        (line,) = rate.plot(writers, rates, marker="o", label=label)
        annotated += [(x, y, line.get_color()) for x, y in zip(writers, rates, strict=True)]
        per_op = [(row.extra.get("writers", 0), row.extra.get("fsyncs_per_op")) for row in series]
        points = [(w, f) for w, f in per_op if f is not None]
        if points:
            fsyncs.plot(*zip(*points, strict=True), marker="o", label=label)
    for axis, title in ((rate, "durable puts per second"), (fsyncs, "fsyncs per put")):
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(lambda value, _position: f"{value:g}")
        axis.set_xlabel("concurrent writers (log2 axis)")
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0.0)
        axis.grid(alpha=0.3)
    rate.set_ylim(top=rate.get_ylim()[1] * 1.08)  # room for the top annotations
    _annotate_rates(rate, annotated)
    rate.set_ylabel("ops/s (linear, from 0)")
    rate.yaxis.set_major_formatter(lambda value, _position: _short(value))
    rate.legend(fontsize=7)
    figure.suptitle("Group-commit sweep", fontsize=11)
    figure.tight_layout()
    return figure


def _annotate_rates(axis: Any, points: list[tuple[float, float, Any]]) -> None:
    """Label each ``(x, y, colour)`` point with its value where the label does not collide.

    Above the point if the next point up at the same x is at least a tenth of the axis
    away; else below it, or to its right when below would cross the x axis.
    """
    room = 0.1 * axis.get_ylim()[1]
    for x, y, colour in points:
        higher = [other for other_x, other, _ in points if other_x == x and other > y]
        place = {"xytext": (0, 5), "ha": "center", "va": "bottom"}
        if higher and min(higher) - y < room:
            place = {"xytext": (0, -5), "ha": "center", "va": "top"}
            if y < room:
                place = {"xytext": (6, 0), "ha": "left", "va": "center"}
        axis.annotate(
            _short(y), (x, y), textcoords="offset points", fontsize=6, color=colour, **place
        )


def recovery_figure(plt: Any, rows: list[Row]) -> Any:
    """Open time (s) against history size (records written), one line per variant.

    Each point is ``extra["open_seconds"]`` (the median open: ``Store.open`` + snapshot load
    + replay + first get) at ``extra["log_records"]``; rows without a ``variant`` form one
    line. A ``live keys only`` row is drawn as a horizontal reference. Both axes are linear
    from 0; a table in the lower right gives every point's records, variant and seconds.
    """
    lines: dict[str, list[tuple[int, float, int | None]]] = {}
    for row in rows:
        variant = row.extra.get("variant", "actorkv")
        point = (
            row.extra.get("log_records", row.ops),
            row.extra.get("open_seconds", row.seconds),
            row.extra.get("dir_bytes", row.extra.get("log_bytes")),
        )
        lines.setdefault(variant, []).append(point)
    reference = lines.pop("live keys only", None)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    largest = max(point[0] for points in lines.values() for point in points)
    slowest = max(point[1] for points in lines.values() for point in points)
    if reference:
        axis.axhline(
            reference[0][1],
            linestyle=":",
            color="grey",
            linewidth=1,
            label=f"only the {reference[0][0]:,} live keys",
        )
    for variant, points in lines.items():
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    table = [f"{'records':>10} {'open s':>7}  variant"] + [
        f"{count:>10,} {time_s:>7.3g}  {variant}"
        for variant, points in lines.items()
        for count, time_s, _ in points
    ]
    axis.text(
        0.97,
        0.04,
        "\n".join(table),
        transform=axis.transAxes,
        ha="right",
        va="bottom",
        family="monospace",
        fontsize=6,
        bbox={"facecolor": "white", "edgecolor": "lightgrey"},
    )
    axis.set_xlim(0, largest * 1.05)
    axis.set_ylim(0, slowest * 1.1)
    axis.xaxis.set_major_formatter(lambda value, _position: f"{value:,.0f}")
    axis.set_xlabel("history (records written, one put each; linear)")
    axis.set_ylabel("open time, s (open + snapshot + replay + get; linear)")
    axis.set_title("Recovery: open time against history, with and without snapshots", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
