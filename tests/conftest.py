"""Fixtures every test directory may use (see each module)."""

from tests.runtimes.fixtures import ray_cluster, runtime

__all__ = ["ray_cluster", "runtime"]
