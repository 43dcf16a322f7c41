"""The Python examples of the capability pages in docs/ run as written (in a scratch directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PAGES = ["archive.md", "indexes.md", "ray.md"]  # pages whose examples are whole programs
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
