"""Fresh actorkv stores for eventsourcing's test cases: one directory per recorder."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from unittest import TestCase

from eventsourcing.utils import Environment

from actors.eventsourcing import Factory

TIMEOUT = 10.0
"""Seconds any wait may take before a test calls it hung (never a timing assertion)."""


def new_directory(case: TestCase) -> str:
    """A new store directory, removed after ``case`` once every store in it is closed."""
    directory = tempfile.mkdtemp(prefix="actorkv-es-")

    def remove() -> None:
        gc.collect()  # applications a test did not close release their stores now
        shutil.rmtree(directory, ignore_errors=True)

    case.addCleanup(remove)
    return directory


def new_factory(case: TestCase, name: str = "TestCase", **env: str) -> Factory:
    """A factory on a new store directory, closed after ``case``."""
    settings = {"ACTORKV_PATH": new_directory(case), **env}
    factory = Factory(Environment(name, settings))
    case.addCleanup(factory.close)
    return factory


class ActorKVEnvironment(TestCase):
    """Selects actors.eventsourcing in ``os.environ`` for the application test cases."""

    expected_factory_topic = "actors.eventsourcing:Factory"
    settings: dict[str, str]

    def setUp(self) -> None:
        super().setUp()
        self.settings = {
            "PERSISTENCE_MODULE": "actors.eventsourcing",
            "ACTORKV_PATH": new_directory(self),
        }
        os.environ.update(self.settings)

    def tearDown(self) -> None:
        for key in self.settings:
            del os.environ[key]
        super().tearDown()
