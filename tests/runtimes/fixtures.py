"""The runtime a test runs under: the threads runtime, and Ray on a local cluster.

A test module that uses the ``runtime`` fixture (``pytestmark =
pytest.mark.usefixtures("runtime")``) runs each of its tests once per runtime: under
``"ray"``, every ``Store.open`` in the test opens the store with ``runtime="ray"``, so the
same test body drives Ray-hosted key spaces and actors. A test that relies on what only one
process can share (a ``threading.Event`` passed to a command, the store's internals) is
marked ``@pytest.mark.threads_only("why")`` and skipped under Ray with that reason.

The Ray cluster is started for each module that needs it and shut down after it (the rest
of the suite, which forks and kills processes, runs without it):
``ray.init(num_cpus=2, include_dashboard=False)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actors import Store

RUNTIMES = ["threads", "ray"]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    if name == "threads":
        return name
    marker = request.node.get_closest_marker("threads_only")
    if marker is not None:
        pytest.skip(f"threads runtime only: {marker.args[0]}")
    request.getfixturevalue("ray_cluster")
    opening = Store.open.__func__  # type: ignore[attr-defined]

    def open_on_ray(cls: type[Store], path: Any, **options: Any) -> Store:
        options.setdefault("runtime", "ray")
        store: Store = opening(cls, path, **options)
        return store

    monkeypatch.setattr(Store, "open", classmethod(open_on_ray))
    return name
