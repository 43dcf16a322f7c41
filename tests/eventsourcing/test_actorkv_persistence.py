"""What actors.eventsourcing promises beyond eventsourcing's own test cases."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from uuid import UUID, uuid4

import pytest

pytest.importorskip("eventsourcing", reason="pip install -e '.[eventsourcing]'")

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.utils import Environment

from actors import Store
from actors._es_store import open_stores
from actors.eventsourcing import ActorKVApplicationRecorder, Factory, keyspace_name
from tests.eventsourcing.helpers import TIMEOUT


def factory_on(path: Path, name: str = "App", **env: str) -> Factory:
    return Factory(Environment(name, {"ACTORKV_PATH": str(path), **env}))


def event(originator: UUID | str, version: int, topic: str = "topic") -> StoredEvent:
    return StoredEvent(originator, version, topic, f"{originator}/{version}".encode())


# -- the environment -------------------------------------------------------------------------


def test_a_missing_store_path_is_an_os_error_naming_the_keys_to_set() -> None:
    with pytest.raises(OSError, match="APP_ACTORKV_PATH, ACTORKV_PATH"):
        Factory(Environment("App", {}))


def test_an_unknown_fsync_policy_is_an_os_error_listing_the_policies(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="always, interval, never"):
        factory_on(tmp_path, ACTORKV_FSYNC="sometimes")
    assert open_stores() == {}


def test_the_application_name_prefix_picks_the_path(tmp_path: Path) -> None:
    env = {"APP_ACTORKV_PATH": str(tmp_path / "mine"), "ACTORKV_PATH": str(tmp_path / "other")}
    factory = Factory(Environment("App", env))
    try:
        assert factory.lease.store.path == tmp_path / "mine"
    finally:
        factory.close()


def test_each_application_keeps_its_records_in_its_own_key_spaces(tmp_path: Path) -> None:
    app = Application[UUID](
        env={
            "PERSISTENCE_MODULE": "actors.eventsourcing",
            "ACTORKV_PATH": str(tmp_path),
            "IS_SNAPSHOTTING_ENABLED": "y",
        }
    )
    aggregate = Aggregate()
    app.save(aggregate)
    app.take_snapshot(aggregate.id)
    app.close()
    with Store.open(tmp_path) as store:
        assert store.keyspaces() == ["es.Application", "es.Application.snapshots"]
    assert keyspace_name("") == "es.default"


# -- one store per directory per process ---------------------------------------------------------


def test_factories_of_one_directory_share_one_store_closed_with_the_last(tmp_path: Path) -> None:
    first = factory_on(tmp_path, "First")
    second = factory_on(tmp_path, "Second")
    assert first.lease.store is second.lease.store
    assert open_stores() == {tmp_path: 2}
    first.close()
    first.close()  # idempotent: the second factory's claim stays
    assert open_stores() == {tmp_path: 1}
    second.application_recorder().insert_events([event(uuid4(), 1)])
    second.close()
    assert open_stores() == {}
    with Store.open(tmp_path):  # unlocked: the shared store was closed
        pass


def test_a_second_fsync_policy_for_an_open_directory_is_refused(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    try:
        with pytest.raises(OSError, match="ACTORKV_FSYNC='always', not 'never'"):
            factory_on(tmp_path, ACTORKV_FSYNC="never")
        assert open_stores() == {tmp_path: 1}
    finally:
        factory.close()


def test_a_store_left_open_by_an_application_is_closed_once_it_is_collected(tmp_path: Path) -> None:
    app = Application[UUID](
        env={"PERSISTENCE_MODULE": "actors.eventsourcing", "ACTORKV_PATH": str(tmp_path)}
    )
    app.save(Aggregate())
    assert open_stores() == {tmp_path: 1}
    del app
    gc.collect()
    assert open_stores() == {}


def test_a_recorder_keeps_the_store_open_after_its_factory_is_dropped(tmp_path: Path) -> None:
    recorder = factory_on(tmp_path).application_recorder()
    gc.collect()
    assert recorder.insert_events([event(uuid4(), 1)]) == [1]
    del recorder
    gc.collect()
    assert open_stores() == {}


def test_a_closed_store_is_an_operational_error(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    factory.close()
    with pytest.raises(OperationalError):
        recorder.insert_events([event(uuid4(), 1)])
    with pytest.raises(OperationalError):
        recorder.max_notification_id()


# -- writes -----------------------------------------------------------------------------------


def test_notification_ids_from_16_threads_are_exactly_one_to_n_each_insert_consecutive(
    tmp_path: Path,
) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    given: list[list[int]] = []
    lock = threading.Lock()

    def insert() -> None:
        for _ in range(25):
            originator = uuid4()
            ids = recorder.insert_events([event(originator, 1), event(originator, 2)])
            assert ids is not None
            with lock:
                given.append(list(ids))

    threads = [threading.Thread(target=insert) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    try:
        assert sorted(i for ids in given for i in ids) == list(range(1, 801))
        assert all(second == first + 1 for first, second in given)
        notifications = recorder.select_notifications(None, 1_000)
        assert [n.id for n in notifications] == list(range(1, 801))
        assert recorder.max_notification_id() == 800
        # Fewer records than inserts: concurrent inserts shared group commits.
        assert recorder.keyspace.stats().fsyncs < 400
    finally:
        factory.close()


def test_an_insert_with_one_recorded_version_writes_none_of_its_events(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    first, second = uuid4(), uuid4()
    assert recorder.insert_events([event(first, 1)]) == [1]
    before = recorder.keyspace.last_seq
    with pytest.raises(IntegrityError, match="already recorded"):
        recorder.insert_events([event(second, 1), event(first, 1)])
    assert recorder.keyspace.last_seq == before  # nothing reached the log
    assert recorder.select_events(second) == []
    assert recorder.max_notification_id() == 1
    assert recorder.insert_events([event(second, 1)]) == [2]  # no gap after the refusal
    factory.close()


def test_a_process_insert_behind_its_tracking_position_writes_nothing(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.process_recorder()
    originator = uuid4()
    recorder.insert_events([event(originator, 1)], tracking=Tracking("up", 5))
    with pytest.raises(IntegrityError, match="not greater than current max tracking ID 5"):
        recorder.insert_events([event(originator, 2)], tracking=Tracking("up", 5))
    assert [e.originator_version for e in recorder.select_events(originator)] == [1]
    assert recorder.max_tracking_id("up") == 5
    assert recorder.max_notification_id() == 1
    factory.close()


def test_a_version_beyond_64_bits_is_a_data_error_and_writes_nothing(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    with pytest.raises(DataError, match="signed 64 bits"):
        recorder.insert_events([event(uuid4(), 2**63)])
    assert recorder.max_notification_id() is None
    factory.close()


# -- reads ------------------------------------------------------------------------------------


def test_originators_whose_ids_contain_slashes_or_prefix_each_other_are_kept_apart(
    tmp_path: Path,
) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    ids = ["a", "a/", "a/1", "a/00000000000000000001", "ab"]
    for originator in ids:
        recorder.insert_events([event(originator, v) for v in (-1, 0, 1)])
    for originator in ids:
        events = recorder.select_events(originator)
        assert [(e.originator_id, e.originator_version) for e in events] == [
            (originator, -1),
            (originator, 0),
            (originator, 1),
        ]
    factory.close()


def test_selected_events_follow_gt_lte_desc_and_limit_with_the_written_id_type(
    tmp_path: Path,
) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    originator = uuid4()
    recorder.insert_events([event(originator, v) for v in range(1, 6)])
    select = recorder.select_events

    def versions(**kwargs: object) -> list[int]:
        return [e.originator_version for e in select(originator, **kwargs)]  # type: ignore[arg-type]

    assert versions() == [1, 2, 3, 4, 5]
    assert versions(gt=2) == [3, 4, 5]
    assert versions(lte=2) == [1, 2]
    assert versions(gt=1, lte=4, desc=True) == [4, 3, 2]
    assert versions(desc=True, limit=2) == [5, 4]
    assert versions(gt=5) == []
    assert versions(gt=2**63 - 1) == []
    assert versions(lte=-(2**63) - 1) == []
    assert versions(limit=0) == []
    assert select(str(originator))[0].originator_id == originator  # a UUID, as written
    factory.close()


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.process_recorder()
    originator = uuid4()
    recorder.insert_events([event(originator, 1), event("text-id", 1, "other")])
    recorder.insert_events([event(originator, 2)], tracking=Tracking("up", 7))
    written = recorder.select_notifications(None, 10)
    factory.close()

    reopened = factory_on(tmp_path)
    recorder = reopened.process_recorder()
    assert recorder.select_notifications(None, 10) == written
    assert recorder.select_notifications(None, 10, topics=["other"]) == [written[1]]
    assert written[1].originator_id == "text-id"
    assert recorder.max_notification_id() == 3
    assert recorder.max_tracking_id("up") == 7
    assert recorder.insert_events([event(originator, 3)]) == [4]
    with pytest.raises(IntegrityError):
        recorder.insert_events([event(originator, 2)])
    reopened.close()


# -- subscriptions ------------------------------------------------------------------------------


def insert_numbered(recorder: ActorKVApplicationRecorder, count: int, topic: str) -> None:
    for _ in range(count):
        recorder.insert_events([event(uuid4(), 1, topic)])


def test_a_subscription_delivers_history_then_live_notifications_after_gt_in_order(
    tmp_path: Path,
) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    insert_numbered(recorder, 10, "old")
    got: list[int] = []
    with recorder.subscribe(gt=4) as subscription:
        writer = threading.Thread(target=insert_numbered, args=(recorder, 10, "new"))
        writer.start()
        for notification in subscription:
            got.append(notification.id)
            if notification.id == 20:
                break
        writer.join(TIMEOUT)
    assert got == list(range(5, 21))
    factory.close()


def test_a_subscription_keeps_only_its_topics_and_starts_past_the_last_id(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    insert_numbered(recorder, 3, "a")
    with recorder.subscribe(gt=100, topics=["b"]) as subscription:
        insert_numbered(recorder, 1, "b")  # id 4: not above 100
        insert_numbered(recorder, 96, "a")
        insert_numbered(recorder, 2, "b")  # ids 101, 102
        assert [next(subscription).id, next(subscription).id] == [101, 102]
    with recorder.subscribe(gt=None, topics=["b"]) as subscription:
        assert [next(subscription).id for _ in range(3)] == [4, 101, 102]
    factory.close()


def test_stopping_a_subscription_from_another_thread_ends_a_waiting_iteration(
    tmp_path: Path,
) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    subscription = recorder.subscribe(gt=None)
    ended = threading.Event()

    def iterate() -> None:
        for _ in subscription:
            pass
        ended.set()

    thread = threading.Thread(target=iterate)
    thread.start()
    subscription.stop()
    thread.join(TIMEOUT)
    assert ended.is_set()
    factory.close()


def test_closing_the_store_ends_a_subscription(tmp_path: Path) -> None:
    factory = factory_on(tmp_path)
    recorder = factory.application_recorder()
    insert_numbered(recorder, 1, "a")
    subscription = recorder.subscribe(gt=None)
    assert next(subscription).id == 1
    factory.close()
    with pytest.raises(StopIteration):
        next(subscription)
