"""``actorkv bench`` / ``python -m bench``: run the workload groups, print and save results.

Runs the selected groups (see :mod:`bench.driver.registry`) with a progress bar on stderr,
then prints a table and writes ``results.json``, ``report.md`` and PNG charts to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from . import registry, report
from .core import Row, RunContext
from .engines import ENGINE_NAMES
from .machine import describe, machine_info


@dataclass(frozen=True)
class Sizes:
    """Records loaded, operations per measured phase, repeats (median reported)."""

    records: int
    ops: int
    repeats: int


QUICK = Sizes(records=3_000, ops=2_000, repeats=3)
"""``--quick``: the whole run in under 2 minutes on 2 cores."""
DEFAULT = Sizes(records=50_000, ops=10_000, repeats=3)
"""Without ``--quick``: under 15 minutes on 2 cores."""

PEER_PACKAGES = ("lmdb", "diskcache", "rocksdict", "eventsourcing", "msgspec", "pykka")


class Progress:
    """A one-line progress bar on stderr: groups done, measurements so far, elapsed time.

    On a terminal it redraws in place; otherwise it prints one line per group.
    """

    WIDTH = 20

    def __init__(self, groups: int, stream: TextIO = sys.stderr) -> None:
        self.groups = groups
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.monotonic()
        self.done = 0
        self.measured = 0
        self.group = ""

    def start_group(self, index: int, name: str) -> None:
        self.done, self.group = index, name
        if not self.live:
            print(f"[{index + 1}/{self.groups}] {name} ({self._elapsed()})", file=self.stream)
        self._draw("")

    def step(self, label: str) -> None:
        """Called by ``measure()`` as each measurement starts."""
        self.measured += 1
        self._draw(label)

    def finish(self) -> None:
        self.done = self.groups
        self._draw("done")
        if self.live:
            self.stream.write("\n")
            self.stream.flush()

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _draw(self, label: str) -> None:
        if not self.live:
            return
        filled = round(self.WIDTH * self.done / max(self.groups, 1))
        bar = "#" * filled + "." * (self.WIDTH - filled)
        text = (
            f"[{bar}] {self.done}/{self.groups} {self.group}  {self.measured} measured  "
            f"{self._elapsed()}  {label}"
        )
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="actorkv bench",
        description=(
            "Benchmark actorkv against sqlite3, lmdb, diskcache and rocksdict at matched "
            "durability: db_bench and YCSB workloads, a group-commit sweep, recovery time "
            "and an event-sourced bank."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes, under 2 minutes (records={QUICK.records}, ops={QUICK.ops})",
    )
    parser.add_argument(
        "--records",
        type=int,
        help=f"entries loaded before reads; YCSB loads a fifth (default {DEFAULT.records})",
    )
    parser.add_argument(
        "--ops", type=int, help=f"operations per measured phase (default {DEFAULT.ops})"
    )
    parser.add_argument("--repeats", type=int, help="runs per measurement; the median is kept")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="output folder (bench-results/)"
    )
    parser.add_argument(
        "--scratch", type=Path, help="where databases are created (default: OUT/.scratch)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--json", action="store_true", help="print results.json to stdout instead of a table"
    )
    parser.add_argument(
        "--only",
        type=_names,
        metavar="GROUP[,GROUP]",
        help=f"run only these groups: {', '.join(registry.GROUP_NAMES)}",
    )
    parser.add_argument(
        "--engines",
        type=_names,
        metavar="NAME[,NAME]",
        help=f"run only these engines: {', '.join(ENGINE_NAMES)} (actorkv is always kept)",
    )
    args = parser.parse_args(argv)
    for name in ("records", "ops", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.engines:
        unknown = sorted(set(args.engines) - set(ENGINE_NAMES))
        if unknown:
            names = ", ".join(ENGINE_NAMES)
            parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {names}")
    try:
        args.groups = registry.selected(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _versions() -> dict[str, str]:
    versions = {"sqlite": sqlite3.sqlite_version}
    for package in PEER_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scratch: Path = args.scratch or out / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    engines = tuple(dict.fromkeys(["actorkv", *args.engines])) if args.engines else None
    progress = Progress(len(args.groups))
    ctx = RunContext(
        records=args.records or sizes.records,
        ops=args.ops or sizes.ops,
        seed=args.seed,
        quick=args.quick,
        repeats=args.repeats or sizes.repeats,
        scratch=scratch,
        progress=progress.step,
        engines=engines,
    )
    print("measuring fsync latency ...", file=sys.stderr)
    machine = machine_info(scratch)
    config: dict[str, Any] = {
        "records": ctx.records,
        "ops": ctx.ops,
        "repeats": ctx.repeats,
        "seed": ctx.seed,
        "quick": ctx.quick,
        "groups": [name for name, _ in args.groups],
        "engines": list(engines) if engines else "all",
        "versions": _versions(),
    }
    started = time.monotonic()
    groups: list[tuple[str, list[Row]]] = []
    group_seconds: dict[str, float] = {}
    config["group_seconds"] = group_seconds
    for index, (name, target) in enumerate(args.groups):
        progress.start_group(index, name)
        runner = registry.resolve(name, target, ctx)
        if runner is None:
            continue
        group_started = time.monotonic()
        rows = runner(ctx)
        group_seconds[name] = round(time.monotonic() - group_started, 1)
        for row in rows:
            row.extra.setdefault("group", name)
        groups.append((name, rows))
    progress.finish()
    config["seconds"] = round(time.monotonic() - started, 1)
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = [row for _, group_rows in groups for row in group_rows]
    report.fill_ratios(rows)
    charts = report.write_charts(out, groups, ctx)
    report.write_json(out / "results.json", machine, config, ctx.notices, rows)
    report.write_markdown(out / "report.md", describe(machine), config, ctx.notices, groups, charts)

    if args.json:  # what results.json holds, on stdout
        sys.stdout.write((out / "results.json").read_text())
        return 0
    print()
    print(describe(machine))
    print(f"{len(rows)} rows in {config['seconds']} s; ratio = peer ops/s / actorkv ops/s")
    print()
    print(report.terminal_table(rows))
    if ctx.notices:
        print()
        print(*(f"notice: {notice}" for notice in ctx.notices), sep="\n")
    files = ["results.json", "report.md", *(chart.name for chart in charts)]
    print(f"\nwrote {', '.join(files)} to {out}/")
    return 0


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def command(argv: tuple[str, ...]) -> None:
    """Run the benchmarking suite (actorkv bench --help for its options)."""
    sys.exit(main(list(argv)))
