"""What an install puts in site-packages, and the public names of each module."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import actors
import storage

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"pip wheel failed: {built.stderr[-2000:]}")
    (found,) = out.glob("actorkv-*.whl")
    return zipfile.ZipFile(found)


def test_the_wheel_installs_only_the_projects_own_top_level_names(wheel: zipfile.ZipFile) -> None:
    names = {name.split("/")[0] for name in wheel.namelist()}
    assert names == {"actors", "storage", "actorkv_bench", "actorkv-0.1.0.dist-info"}
    files = set(wheel.namelist())
    assert {"actors/py.typed", "storage/py.typed", "actors/runtimes/__init__.py"} <= files
    assert not any(name.startswith(("bench/", "tests/")) for name in files)


def test_the_bench_command_is_an_entry_point_not_an_import(wheel: zipfile.ZipFile) -> None:
    (points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(points).decode()
    assert "[actorkv.commands]\nbench = actorkv_bench.cli:command" in text
    assert "actorkv = actors.cli:main" in text
    library = [path.read_text() for path in (REPO / "actors").rglob("*.py")]
    assert not any(
        "bench" in line and "import" in line
        for text in library
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        and ("import bench" in line or "from bench" in line or '"bench.' in line)
    )


def _public_modules(package: ModuleType) -> list[str]:
    walked = pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    public = [
        info.name for info in walked if not any(p.startswith("_") for p in info.name.split("."))
    ]
    return [package.__name__, *public]


MODULES = [name for package in (actors, storage) for name in _public_modules(package)]


@pytest.mark.parametrize("name", MODULES)
def test_each_public_module_exports_every_public_name_it_defines_sorted(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # a module of an extra that is not installed
        if "pip install 'actorkv[" not in str(exc):
            raise
        pytest.skip(str(exc))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    assert list(exported) == sorted(exported, key=lambda n: (not n.isupper(), n))
    assert len(set(exported)) == len(exported)
    defined = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    }
    assert defined <= set(exported), sorted(defined - set(exported))
    for member in exported:
        assert hasattr(module, member), f"{module.__name__}.{member}"
