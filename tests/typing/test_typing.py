"""Typed handles: mypy --strict accepts typed_usage.py and refuses each marked mistake."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
ERROR = re.compile(r"^(\S+\.py):(\d+): error: .*\[([a-z-]+)\]$", re.MULTILINE)


def test_mypy_accepts_the_typed_usage_and_refuses_each_marked_mistake() -> None:
    pytest.importorskip("mypy")
    files = ["tests/typing/typed_usage.py", "tests/typing/typed_mistakes.py"]
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *files],
        capture_output=True,
        text=True,
        cwd=REPO,  # the repository's mypy settings (its untyped dependencies)
        timeout=600,
        check=False,
    )
    found = {(Path(m[1]).name, int(m[2]), m[3]) for m in ERROR.finditer(checked.stdout)}
    mistakes = HERE / "typed_mistakes.py"
    wanted = {
        ("typed_mistakes.py", number, marked[1])
        for number, line in enumerate(mistakes.read_text().splitlines(), start=1)
        if (marked := re.search(r"# error: ([a-z-]+)$", line))
    }
    assert len(wanted) == 6
    assert found == wanted, checked.stdout


def test_the_typed_usage_runs(tmp_path: Path) -> None:
    from tests.typing.typed_usage import use

    assert use(str(tmp_path / "store")) == (1 + 2, 5, "new year")
