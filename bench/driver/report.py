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

from bench.driver.core import Row, RunContext

PARAM_KEYS = ("writers", "log_records", "accounts", "records")
"""``extra`` keys that are parameters of a measurement: rows match only if they agree."""

SWEEP = "group_commit_sweep"
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
        mismatched = "ratio is against" in row.notes
        if row.engine == "actorkv" or row.ratio_to_actorkv is None or mismatched:
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
    """Throughput per engine per workload (one PNG per group) and the group-commit sweep."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        ctx.notice("matplotlib is not installed: no charts (pip install matplotlib)")
        return []
    written = []
    for group, rows in groups:
        bars = [row for row in rows if row.workload != SWEEP and row.ops_per_s > 0]
        if bars:
            written.append(_throughput_chart(plt, directory / f"throughput_{group}.png", bars))
    sweep = [row for _, rows in groups for row in rows if row.workload == SWEEP]
    if sweep:
        written.append(_sweep_chart(plt, directory / "group_commit_sweep.png", sweep))
    return written


def durability_class(row: Row) -> str:
    """``durable``, ``not durable``, or ``n/a`` for rows that write nothing."""
    if row.durability.lower().startswith("n/a"):
        return "n/a"
    return "durable" if is_durable(row) else "not durable"


def _label(row: Row) -> str:
    params = ", ".join(f"{row.extra[key]:,} {key}" for key in PARAM_KEYS[:3] if key in row.extra)
    return f"{row.engine} ({durability_class(row)})" + (f"\n{params}" if params else "")


def _short(value: float) -> str:
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _throughput_chart(plt: Any, path: Path, rows: list[Row]) -> Path:
    workloads = list(dict.fromkeys(row.workload for row in rows))
    columns = min(3, len(workloads))
    lines = math.ceil(len(workloads) / columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(5.2 * columns, 0.9 + 2.6 * lines), squeeze=False
    )
    engines = sorted({row.engine for row in rows}, key=lambda e: (e != "actorkv", e))
    colours = {engine: plt.cm.tab10(i % 10) for i, engine in enumerate(engines)}
    for axis, workload in zip(axes.flat, workloads, strict=False):
        chosen = [row for row in rows if row.workload == workload]
        chosen.sort(key=lambda r: (r.engine != "actorkv", r.engine, not is_durable(r)))
        labels = [_label(row) for row in chosen]
        axis.barh(
            range(len(chosen)),
            [row.ops_per_s for row in chosen],
            color=[colours[row.engine] for row in chosen],
            hatch=["" if is_durable(row) else "//" for row in chosen],
        )
        axis.set_yticks(range(len(chosen)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_xscale("log")
        rates = [row.ops_per_s for row in chosen]
        low, high = math.floor(math.log10(min(rates))), math.ceil(math.log10(max(rates)) + 0.3)
        axis.set_xlim(10.0**low, 10.0**high)  # whole decades: bar lengths compare honestly
        axis.xaxis.set_minor_formatter(plt.NullFormatter())
        for y, rate in enumerate(rates):
            axis.text(rate, y, f" {_short(rate)}", va="center", fontsize=6)
        axis.set_title(workload, fontsize=9)
        axis.set_xlabel("ops/s (log)", fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
    for axis in list(axes.flat)[len(workloads) :]:
        axis.set_visible(False)
    figure.suptitle("Throughput per engine (hatched: not durable)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _sweep_chart(plt: Any, path: Path, rows: list[Row]) -> Path:
    figure, (rate, fsyncs) = plt.subplots(1, 2, figsize=(11, 4))
    for label in dict.fromkeys(f"{row.engine}: {row.durability}" for row in rows):
        series = sorted(
            (row for row in rows if f"{row.engine}: {row.durability}" == label),
            key=lambda r: r.extra.get("writers", 0),
        )
        writers = [row.extra.get("writers", 0) for row in series]
        rate.plot(writers, [row.ops_per_s for row in series], marker="o", label=label)
        per_op = [(row.extra.get("writers", 0), row.extra.get("fsyncs_per_op")) for row in series]
        points = [(w, f) for w, f in per_op if f is not None]
        if points:
            fsyncs.plot(*zip(*points, strict=True), marker="o", label=label)
    for axis, title in ((rate, "durable puts per second"), (fsyncs, "fsyncs per put")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent writers")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    rate.set_yscale("log")
    rate.legend(fontsize=7)
    figure.suptitle("Group-commit sweep", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
