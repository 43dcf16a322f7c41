"""eventsourcing's own recorder and factory test cases, run against actors.eventsourcing.

Subclassed the way the library's SQLite and PostgreSQL modules subclass them: the base
cases are reached through their module (a TestCase in this module's namespace would be
collected, abstract or not).
"""

from __future__ import annotations

import pytest

pytest.importorskip("eventsourcing", reason="pip install -e '.[eventsourcing]'")
pytest.importorskip("Crypto", reason="eventsourcing's cipher tests need pycryptodome")

from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from actors.eventsourcing import (
    ActorKVAggregateRecorder,
    ActorKVApplicationRecorder,
    ActorKVProcessRecorder,
    ActorKVTrackingRecorder,
    Factory,
)
from tests.eventsourcing.helpers import new_directory, new_factory


class TestActorKVAggregateRecorder(cases.AggregateRecorderTestCase):
    def create_recorder(self) -> ActorKVAggregateRecorder:
        return new_factory(self).aggregate_recorder("snapshots")


class TestActorKVApplicationRecorder(cases.ApplicationRecorderTestCase[ActorKVApplicationRecorder]):
    def create_recorder(self) -> ActorKVApplicationRecorder:
        return new_factory(self).application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestActorKVNonInterleavingNotificationIDs(cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ActorKVApplicationRecorder:
        return new_factory(self).application_recorder()


class TestActorKVTrackingRecorder(cases.TrackingRecorderTestCase):
    def create_recorder(self) -> ActorKVTrackingRecorder:
        return new_factory(self).tracking_recorder()


class TestActorKVProcessRecorder(cases.ProcessRecorderTestCase):
    def create_recorder(self) -> ActorKVProcessRecorder:
        return new_factory(self).process_recorder()


class CustomTrackingRecorder(ActorKVTrackingRecorder):
    """A subclass the factory must build when asked by class or by topic."""


class TestActorKVInfrastructureFactory(cases.InfrastructureFactoryTestCase[Factory]):
    def setUp(self) -> None:
        self.env = Environment(
            "TestCase",
            {"PERSISTENCE_MODULE": "actors.eventsourcing", "ACTORKV_PATH": new_directory(self)},
        )
        super().setUp()

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[ActorKVAggregateRecorder]:
        return ActorKVAggregateRecorder

    def expected_application_recorder_class(self) -> type[ActorKVApplicationRecorder]:
        return ActorKVApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[ActorKVTrackingRecorder]:
        return ActorKVTrackingRecorder

    def tracking_recorder_subclass(self) -> type[ActorKVTrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ActorKVProcessRecorder]:
        return ActorKVProcessRecorder
