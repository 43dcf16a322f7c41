"""actorkv as the event store of the ``eventsourcing`` library (the ``eventsourcing`` extra).

Select it with the application's environment::

    PERSISTENCE_MODULE=actors.eventsourcing
    ACTORKV_PATH=/var/lib/myapp/store     # the store directory (required)
    ACTORKV_FSYNC=always                  # or "interval", "never" (default "always")

Both settings may be prefixed with the application's name (``BANKACCOUNTS_ACTORKV_PATH``),
as eventsourcing's environments allow. Each application keeps its events, notification
log and tracking positions in the key space ``es.<application name>`` of the store, and its
snapshots in ``es.<application name>.snapshots`` (``aggregate_recorder(purpose)`` in
``es.<name>.<purpose>``); the layout of the keys is in ``actors/_es_layout.py``.

A store directory is owned by one process. Factories of one process that name the same
directory share one open Store (``actors/_es_store.py``), which is closed when the last of
them is closed (``Application.close()``) or collected. Another process opening it meanwhile
gets ``StoreLocked``.

Guarantees, as eventsourcing's recorders must give them: an insert is atomic and durable
(under ``ACTORKV_FSYNC``) when it returns; a version already recorded raises
``IntegrityError`` and writes nothing; notification ids are gapless and given inside the
key space's actor (so concurrent writers never retry); ``subscribe()`` delivers every
notification after ``gt`` in order from actorkv's subscriptions, without polling.

Errors: a missing ``ACTORKV_PATH`` or a bad ``ACTORKV_FSYNC`` raises ``OSError`` (as the
library's SQLite factory does for its settings); bad data raises eventsourcing's
``DataError``, a closed store or a refused write its ``OperationalError``.
"""

from __future__ import annotations

from typing import TypeVar, cast

try:
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment, EnvType, resolve_topic
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = (
        "actors.eventsourcing needs the eventsourcing library: pip install 'actorkv[eventsourcing]'"
    )
    raise ImportError(msg) from exc

from actors._es_recorders import (
    ActorKVAggregateRecorder,
    ActorKVApplicationRecorder,
    ActorKVProcessRecorder,
    ActorKVSubscription,
    ActorKVTrackingRecorder,
)
from actors._es_store import FSYNC_POLICIES, StoreLease
from actors._keyspace import KeySpace
from storage.log import FsyncPolicy

__all__ = [
    "ActorKVAggregateRecorder",
    "ActorKVApplicationRecorder",
    "ActorKVProcessRecorder",
    "ActorKVSubscription",
    "ActorKVTrackingRecorder",
    "Factory",
    "keyspace_name",
]

R = TypeVar("R")

KEYSPACE_PREFIX = "es"
DEFAULT_NAME = "default"  # an environment without an application name


def keyspace_name(application_name: str, purpose: str | None = None) -> str:
    """The key space holding an application's records: its log, or ``purpose`` (snapshots).

    ``es.<name>`` for the events, notifications and tracking; ``es.<name>.<purpose>``
    for an aggregate recorder's (``snapshots``). An empty name is ``default``.
    """
    name = f"{KEYSPACE_PREFIX}.{application_name or DEFAULT_NAME}"
    return name if purpose is None else f"{name}.{purpose}"


class Factory(InfrastructureFactory[ActorKVTrackingRecorder]):
    """Makes eventsourcing's recorders on an actorkv store (``PERSISTENCE_MODULE``).

    Thread-safe. Its recorders hold the store open until the factory is closed.
    """

    ACTORKV_PATH = "ACTORKV_PATH"
    ACTORKV_FSYNC = "ACTORKV_FSYNC"

    aggregate_recorder_class = ActorKVAggregateRecorder
    application_recorder_class = ActorKVApplicationRecorder
    tracking_recorder_class = ActorKVTrackingRecorder
    process_recorder_class = ActorKVProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        """Open (or share) the store named by ``ACTORKV_PATH``.

        Raises:
            OSError: ``ACTORKV_PATH`` is missing or empty, ``ACTORKV_FSYNC`` is not one of
                always, interval and never, or the store is open in this process with
                another ``ACTORKV_FSYNC``.
            ActorKVError: The store could not be opened (``StoreLocked``: another process
                owns it; ``OpenFailed``, ``CorruptLog``, ...).
        """
        super().__init__(env)
        path = (self.env.get(self.ACTORKV_PATH) or "").strip()
        if not path:
            msg = (
                "actorkv store directory not found in the environment: set one of "
                f"{', '.join(self.env.create_keys(self.ACTORKV_PATH))} to a directory "
                "(created if missing) that this process alone opens"
            )
            raise OSError(msg)
        fsync = (self.env.get(self.ACTORKV_FSYNC) or "always").strip().lower()
        if fsync not in FSYNC_POLICIES:
            msg = (
                f"{self.ACTORKV_FSYNC}={fsync!r} is not a durability policy: use one of "
                f"{', '.join(FSYNC_POLICIES)} (always: durable when each insert returns)"
            )
            raise OSError(msg)
        self.lease = StoreLease(path, cast("FsyncPolicy", fsync))
        """The factory's claim on the shared store; ``lease.store`` is the Store itself."""

    def _keyspace(self, purpose: str | None = None) -> KeySpace:
        return self.lease.keyspace(keyspace_name(self.env.name, purpose))

    def aggregate_recorder(self, purpose: str = "events") -> ActorKVAggregateRecorder:
        """A recorder of ``purpose`` (``snapshots``) in ``es.<name>.<purpose>``."""
        return self.aggregate_recorder_class(self._keyspace(purpose), store_lease=self.lease)

    def application_recorder(self) -> ActorKVApplicationRecorder:
        """The application's recorder (``APPLICATION_RECORDER_TOPIC`` may name a subclass)."""
        cls = self._recorder_class(self.APPLICATION_RECORDER_TOPIC, ActorKVApplicationRecorder)
        return cls(self._keyspace(), store_lease=self.lease)

    def tracking_recorder(
        self, tracking_recorder_class: type[ActorKVTrackingRecorder] | None = None
    ) -> ActorKVTrackingRecorder:
        """A tracking recorder of ``tracking_recorder_class`` (or ``TRACKING_RECORDER_TOPIC``)."""
        cls = tracking_recorder_class or self._recorder_class(
            self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class
        )
        return cls(self._keyspace(), store_lease=self.lease)

    def process_recorder(self) -> ActorKVProcessRecorder:
        """The process recorder (``PROCESS_RECORDER_TOPIC`` may name a subclass)."""
        cls = self._recorder_class(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        return cls(self._keyspace(), store_lease=self.lease)

    def _recorder_class(self, topic_key: str, default: type[R]) -> type[R]:
        topic = self.env.get(topic_key)
        if not topic:
            return default
        cls: object = resolve_topic(topic)
        if not (isinstance(cls, type) and issubclass(cls, default)):
            msg = f"{topic_key}={topic!r} does not name a subclass of {default.__name__}"
            raise TypeError(msg)
        return cls

    def close(self) -> None:
        """Release the store (closed with the last factory that shares it). Idempotent."""
        self.lease.release()
