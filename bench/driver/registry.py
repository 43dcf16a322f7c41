"""The workload groups, in run order, each a function ``(ctx: RunContext) -> list[Row]``.

Groups are named by import path and imported only when run, so a group whose module is
missing (or whose import fails) becomes a one-line notice, not a crash.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .core import Row, RunContext

GroupRunner = Callable[[RunContext], list[Row]]

GROUPS: tuple[tuple[str, str], ...] = (
    ("dbbench", ".dbbench:run_dbbench"),
    ("ycsb", ".ycsb:run_ycsb"),
    ("group_commit_sweep", ".sweep:run_group_commit_sweep"),
    ("recovery", ".recovery:run_recovery"),
    ("bank", ".bank:run_bank"),
)
"""(group name, ``"module:function"``) in the order a full run measures them."""

GROUP_NAMES = tuple(name for name, _ in GROUPS)


def resolve(name: str, target: str, ctx: RunContext) -> GroupRunner | None:
    """Import the runner of group ``name`` from ``target``; None (and a notice) if missing."""
    module_name, _, function = target.partition(":")
    try:
        runner: GroupRunner = getattr(importlib.import_module(module_name, __package__), function)
    except (ImportError, AttributeError) as exc:
        ctx.notice(f"{name}: {target} is not available ({exc}); skipped")
        return None
    return runner


def selected(only: list[str] | None) -> list[tuple[str, str]]:
    """The groups named in ``only`` (all when None), in run order.

    Raises:
        ValueError: ``only`` names a group that does not exist.
    """
    if not only:
        return list(GROUPS)
    unknown = sorted(set(only) - set(GROUP_NAMES))
    if unknown:
        msg = f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUP_NAMES)}"
        raise ValueError(msg)
    return [(name, target) for name, target in GROUPS if name in only]
