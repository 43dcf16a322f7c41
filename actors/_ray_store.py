"""A store whose key spaces and actors run as Ray actors (``Store.open(..., runtime="ray")``).

The store itself stays in the driver: it locks the directory, lists key spaces, and starts
one host per key space and custom actor (``actors/runtimes/_ray.py``), returning handles
with the methods of the threads runtime's (``actors/_remote.py``). ``close()`` closes every
host (each syncs its log) and stops it. ``Store.connect`` attaches another driver to the
hosts of a running store: it starts nothing and stops nothing.

A projection's feeders run here, in the driver that opened the store: each batch of a
source's changes comes from its host and goes to the projection's host (two round trips),
and a projection is fed only while that driver has the store open.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors._actor import EventSourcedActor, command_names
from actors._drop import drop_directory
from actors._keyspace_input import KeySpaceOptions
from actors._names import ACTORS_DIR, KEYSPACES_DIR, check_name
from actors._remote import RemoteActorHandle, RemoteKeySpace
from actors._store import Store
from actors.runtimes._ray import (
    NAMESPACE,
    RayConnection,
    RayOptions,
    host_name,
    import_ray,
    start_host,
)
from storage.errors import (
    ActorStopped,
    ArchiveError,
    InvalidName,
    InvalidOperation,
    InvalidOption,
    KeyspaceClosed,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RayStore"]


class RayStore(Store):
    """A :class:`Store` whose key spaces and actors are Ray actors. Use ``Store.open``."""

    _ray_options: RayOptions
    _host_options: dict[str, Any]
    _attached: bool

    def _start_ray(
        self, host_options: dict[str, Any], ray_options: RayOptions, *, attached: bool
    ) -> None:
        self._ray = import_ray()
        self._ray_options = ray_options
        self._host_options = host_options
        self._attached = attached
        self._store_name = str(self.path.resolve())
        self._remote_keyspaces: dict[str, tuple[RemoteKeySpace, dict[str, Any]]] = {}
        self._remote_actors: dict[str, RemoteActorHandle] = {}
        self._hosts: dict[str, Any] = {}
        self._hosts_mutex = threading.Lock()
        shipper = getattr(self, "_shipper", None)
        if shipper is not None and not attached:
            lease = shipper.lease
            if not lease.held:
                self._lock.release()
                msg = (
                    f"the archive {shipper.archive!r} could not be reached to take its lease; "
                    "under runtime='ray' the hosts ship under it from the start: open the "
                    "store again once the archive is reachable"
                )
                raise ArchiveError(msg)
            archive, interval, seconds = host_options["archive"]
            host_options["archive"] = (archive, interval, seconds, lease.holder, lease.token)
            shipper.start_thread()  # keeps the lease; the hosts ship

    @classmethod
    def attach(cls, name: str, ray_options: RayOptions) -> Self:
        """Handles on the hosts of the running store ``name`` (see ``Store.connect``)."""
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address="auto", namespace=NAMESPACE)
        store = cls.__new__(cls)
        store.path = Path(name)
        store._closed = False
        store._forked = False
        store._start_ray({}, ray_options, attached=True)
        if not store.keyspaces() and not store._running(ACTORS_DIR):
            msg = f"no store named {name!r} runs on this Ray cluster (no host of it is up)"
            raise InvalidOperation(msg)
        return store

    # -- hosts -----------------------------------------------------------------------------------

    def _connection(self, directory: str, args: tuple[Any, ...] | None) -> RayConnection:
        name = host_name(self._store_name, directory)
        with self._hosts_mutex:
            actor = self._hosts.get(directory)
            if actor is None:
                if args is None:  # attached: only a running host will do
                    try:
                        actor = self._ray.get_actor(name, namespace=NAMESPACE)
                    except ValueError:
                        msg = (
                            f"{directory!r} of the store {self._store_name!r} is not running; "
                            "the driver that opened the store must open it first"
                        )
                        raise InvalidOperation(msg) from None
                else:
                    actor = start_host(self._store_name, directory, args, self._ray_options)
                self._hosts[directory] = actor
        return RayConnection(actor, directory, self._ray_options.retry_seconds)

    def _running(self, kind: str) -> list[str]:
        prefix = host_name(self._store_name, kind + "/")
        names = self._ray.util.list_named_actors(all_namespaces=True)
        found = [
            entry["name"]
            for entry in names
            if isinstance(entry, dict) and entry.get("namespace") == NAMESPACE
        ]
        return sorted(name[len(prefix) :] for name in found if name.startswith(prefix))

    # -- the store's API -------------------------------------------------------------------------

    def keyspace(self, name: str, **options: Any) -> RemoteKeySpace:  # type: ignore[override]
        """Open the key space ``name`` in a Ray actor of its own (options as ``Store.keyspace``)."""
        check_name(name, "key space")
        self._check_open()
        fields = ("key_type", "value_type", "max_key_bytes", "max_value_bytes")
        keyspace_options = KeySpaceOptions(**{k: v for k, v in options.items() if k in fields})
        known = self._remote_keyspaces.get(name)
        if known is not None:
            if keyspace_options != known[0].options:
                msg = f"key space {name!r} is open with other options: {known[0].options}"
                raise InvalidOption(msg)
            if "indexes" in options and options["indexes"] != known[1].get("indexes"):
                msg = (
                    f"key space {name!r} is open with other indexes: {known[0].indexes()}; "
                    "use create_index and drop_index on it"
                )
                raise InvalidOption(msg)
            return known[0]
        directory = f"{KEYSPACES_DIR}/{name}"
        args = (
            None
            if self._attached
            else (self._store_name, "keyspace", name, self._host_options, options)
        )
        connection = self._connection(directory, args)
        remote = RemoteKeySpace(name, connection, keyspace_options)
        self._remote_keyspaces[name] = (remote, options)
        return remote

    def spawn(  # type: ignore[override]
        self, name: str, actor_class: type[EventSourcedActor[Any]], /, *args: Any, **kwargs: Any
    ) -> RemoteActorHandle:
        """Start the actor ``name`` in a Ray actor of its own (or return it if running)."""
        check_name(name, "actor")
        self._check_open()
        unchecked: object = actor_class
        if not (isinstance(unchecked, type) and issubclass(unchecked, EventSourcedActor)):
            msg = f"spawn() needs an EventSourcedActor subclass, got {actor_class!r}"
            raise TypeError(msg)
        known = self._remote_actors.get(name)
        if known is not None:
            if known.actor_class is not actor_class:
                msg = f"actor {name!r} is running as {known.actor_class.__name__}"
                raise InvalidName(msg)
            return known
        directory = f"{ACTORS_DIR}/{name}"
        spec = (actor_class, args, kwargs)
        host_args = (
            None if self._attached else (self._store_name, "actor", name, self._host_options, spec)
        )
        handle = RemoteActorHandle(
            name, actor_class, self._connection(directory, host_args), command_names(actor_class)
        )
        self._remote_actors[name] = handle
        return handle

    def keyspaces(self) -> list[str]:
        """Names of every key space (of the directory; attached: of the running hosts)."""
        if self._attached:
            return self._running(KEYSPACES_DIR)
        return super().keyspaces()

    def fork_keyspace(  # type: ignore[override]
        self, source: str, target: str, *, seq: int | None = None, time: float | None = None
    ) -> RemoteKeySpace:
        """As ``Store.fork_keyspace``: the source's host writes the fork; its own host opens it."""
        self._check_writes(f"fork_keyspace({source!r}, {target!r})")
        check_name(target, "key space")
        self._check_open()
        if target in self._remote_keyspaces:
            msg = f"key space {target!r} exists; drop it first or fork to another name"
            raise InvalidOperation(msg)
        known = self._remote_keyspaces.get(source)
        origin = known[0] if known is not None else self.keyspace(source)
        options = origin._connection.call("fork", target, seq, time)
        return self.keyspace(target, **options)

    def drop_keyspace(self, name: str) -> bool:
        """Stop the key space's host and delete its log; returns whether it existed."""
        check_name(name, "key space")
        self._check_writes(f"drop_keyspace({name!r})")
        self._check_open()
        directory = f"{KEYSPACES_DIR}/{name}"
        self._stop_host(directory, 30.0)
        self._remote_keyspaces.pop(name, None)
        folder = self.path / directory
        if not folder.exists():
            return False
        drop_directory(folder)
        return True

    def metrics(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each host's metrics (as ``Store.metrics``), asked of it: one round trip a host."""
        self._check_open()
        found: dict[str, dict[str, dict[str, Any]]] = {"keyspaces": {}, "actors": {}}
        for directory in sorted(self._hosts):
            for kind, by_name in self._connection(directory, None).call("metrics").items():
                found[kind].update(by_name)
        return found

    def archive_status(self) -> dict[str, Any]:
        """How far each open key space's and actor's log is shipped (asked of its host)."""
        if self._shipper is None and not self._attached:
            msg = "this store ships to no archive; open it with Store.open(..., archive=...)"
            raise InvalidOperation(msg)
        found: dict[str, Any] = {}
        for directory in list(self._hosts):
            connection = self._connection(directory, None)
            found.update(connection.call("archive_status"))
        return found

    def _check_writes(self, what: str) -> None:
        if self._attached:
            msg = (
                f"{what}: this driver is attached to the store (Store.connect); only the "
                "driver that opened it may"
            )
            raise InvalidOperation(msg)

    def _stop_host(self, directory: str, timeout: float) -> None:
        with self._hosts_mutex:
            actor = self._hosts.pop(directory, None)
        if actor is None:
            return
        ray = self._ray
        try:
            ray.get(actor.close.remote(timeout), timeout=timeout + 5)
        finally:
            ray.kill(actor, no_restart=True)

    def close(self, timeout: float = 30.0) -> None:
        """Close every host (each syncs its log) and stop it, then unlock the directory.

        An attached store (``Store.connect``) only lets its handles go.
        """
        if self._closed:
            return
        self._closed = True
        if not self._attached:
            self._stop_feeders_and_sweeper(timeout)  # they use the handles refused below
        # Handles first: a caller waiting on a host (a subscription's reader) then ends
        # instead of sending its call again to a host that is not coming back.
        for keyspace, _ in self._remote_keyspaces.values():
            keyspace._connection.refuse(
                KeyspaceClosed(
                    f"key space {keyspace.name!r} was closed with its store; open the store "
                    f"again and call store.keyspace({keyspace.name!r})"
                )
            )
        for handle in self._remote_actors.values():
            handle._connection.refuse(
                ActorStopped(
                    f"actor {handle.name!r} was stopped when its store was closed; open the "
                    "store again and spawn it"
                )
            )
        if self._attached:
            return
        try:
            for directory in list(self._hosts):
                self._stop_host(directory, timeout)  # each ships all it has first
            if self._shipper is not None:
                self._shipper.close(timeout)  # lets the lease go
        finally:
            self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the store {self._store_name} is closed; open it again"
            raise KeyspaceClosed(msg)

    def __repr__(self) -> str:
        kind = "attached to" if self._attached else "at"
        return f"<RayStore {kind} {self._store_name} hosts={sorted(self._hosts)}>"
