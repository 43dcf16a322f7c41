"""The Python examples of the capability pages in docs/ run as written (in a scratch directory)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
# Pages whose ```python blocks are whole programs (```py blocks are fragments, not run).
PAGES = [
    "actors.md",
    "archive.md",
    "history.md",
    "indexes.md",
    "keyspaces.md",
    "metrics.md",
    "ray.md",
    "snapshots.md",
    "subscriptions.md",
]
BLOCKS = [
    (page, block)
    for page in PAGES
    for block in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
]


@pytest.mark.parametrize(
    ("page", "block"), BLOCKS, ids=[f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)]
)
def test_a_docs_example_runs(page: str, block: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOCS / page), "exec"), {"__name__": "docs_example"})


def test_every_page_listed_has_examples() -> None:
    assert {page for page, _ in BLOCKS} == set(PAGES)


def test_the_command_line_page_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    """docs/cli.md: its program builds a store, then each command exits as its comment says."""
    from click.testing import CliRunner

    from actors.cli import main

    text = (DOCS / "cli.md").read_text()
    (program,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    exec(compile(program, str(DOCS / "cli.md"), "exec"), {"__name__": "docs_example"})
    (commands,) = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    for line in commands.strip().splitlines():
        command, _, comment = line.partition("#")
        expected = re.match(r"\s*exit (\d)", comment)
        args = shlex.split(command)
        assert args[0] == "actorkv"
        result = CliRunner().invoke(main, args[1:])
        assert result.exit_code == (int(expected[1]) if expected else 0), (line, result.output)
        printed = re.match(r"\s*(\{.*\})$", comment)
        if printed:
            assert result.stdout.strip() == printed[1], line
