"""eventsourcing's application test cases with PERSISTENCE_MODULE=actors.eventsourcing.

As the library's own test_application_with_sqlite.py runs them: the environment names the
persistence module and a fresh store directory for each test.
"""

from __future__ import annotations

import pytest

pytest.importorskip("eventsourcing", reason="pip install -e '.[eventsourcing]'")
pytest.importorskip("Crypto", reason="eventsourcing's test modules need pycryptodome")

from eventsourcing.tests import application as cases

from tests.eventsourcing.helpers import ActorKVEnvironment


class TestApplicationWithActorKV(ActorKVEnvironment, cases.ApplicationTestCase):
    pass


class TestExampleApplicationWithActorKV(ActorKVEnvironment, cases.ExampleApplicationTestCase):
    expected_factory_topic = "actors.eventsourcing:Factory"
