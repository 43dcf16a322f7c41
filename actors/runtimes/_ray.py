"""The Ray runtime: every key space and custom actor of a store in a Ray actor of its own.

``Store.open(path, runtime="ray")`` starts one Ray actor per key space and per custom actor
(``store.keyspace``, ``store.spawn``), each a :class:`~actors._host.Host`: the same core,
log and snapshots as the threads runtime, in a process Ray places. The handles the store
returns (``actors/_remote.py``) reach their host through a :class:`RayConnection`.

What Ray does and does not promise, and what is done about it here:

- A Ray actor that dies is restarted by Ray (``max_restarts``, unlimited by default), which
  reruns its constructor: the host recovers its log, as any open does. Its node's disk must
  still hold the log, so it restarts on the same node (the store directory is local).
- A call to a dead actor raises ``RayActorError`` even when it ran. Calls are never retried
  by Ray (``max_task_retries=0``); the connection sends them again, with the same operation
  id for a write, until the host answers or ``retry_seconds`` pass. The id makes the retry
  apply once (``actors/_operations.py``).
- Order is kept per caller: a blocking caller waits for each call; ``put_async`` and actor
  command futures are queued by the host in the order they arrive (the host is an asyncio
  actor, which starts one caller's calls in submission order). A retry after a restart can
  come after a later call of another caller.

Hosts are named ``actorkv:<store>:<keyspaces|actors>/<name>`` in the ``actorkv`` namespace,
so a second driver can attach to a running store (``Store.connect``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors._future import Future
from actors._host import Host
from storage.errors import ActorStopped, InvalidInput, InvalidOption, KeyspaceClosed

__all__ = ["NAMESPACE", "RayConnection", "RayOptions", "host_name", "import_ray", "start_host"]

logger = logging.getLogger("actorkv.ray")

NAMESPACE = "actorkv"
"""The Ray namespace every host is named in."""


def import_ray() -> Any:
    """The ``ray`` module, or InvalidOption saying how to install it."""
    try:
        import ray  # noqa: PLC0415  # an optional extra
    except ImportError as exc:
        msg = "runtime='ray' needs Ray: pip install 'actorkv[ray]'"
        raise InvalidOption(msg) from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How hosts are placed and kept (``Store.open(..., ray_options=RayOptions(...))``).

    Attributes:
        num_cpus: CPUs each host reserves. 0 (default): any number fit on a node, as Ray
            places them; give a share to spread key spaces over nodes and cores.
        resources: Custom Ray resources each host needs (``{"ssd": 1}``, say).
        max_restarts: Restarts Ray makes of a host that died (-1: no limit).
        max_concurrency: Calls a host runs at once (they share its group commits).
        retry_seconds: How long a call to a host that died is retried before it raises.
    """

    num_cpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = -1
    max_concurrency: int = 256
    retry_seconds: float = 60.0

    @classmethod
    def of(cls, given: object) -> RayOptions:
        """Options from what ``Store.open`` was given.

        Raises:
            InvalidOption: An unknown or bad option.
        """
        if given is None:
            return cls()
        if isinstance(given, RayOptions):
            options = given
        elif isinstance(given, dict):
            try:
                options = cls(**given)
            except TypeError as exc:
                msg = f"ray_options: {exc}"
                raise InvalidOption(msg) from exc
        else:
            msg = f"ray_options must be a RayOptions or a dict, got {given!r:.60}"
            raise InvalidOption(msg)
        if options.num_cpus < 0 or options.max_concurrency < 1 or options.retry_seconds <= 0:
            msg = f"ray_options out of range: {options}"
            raise InvalidOption(msg)
        return options


def host_name(store: str, directory: str) -> str:
    """The Ray name of the host of ``directory`` (``"keyspaces/users"``) of ``store``."""
    return f"actorkv:{store}:{directory}"


class RayHost(Host):
    """A host whose opening errors are kept for :meth:`ping` (Ray would only say it died)."""

    def __init__(self, *args: Any) -> None:
        self._failure: BaseException | None = None
        try:
            super().__init__(*args)
        except Exception as exc:  # raised to the caller by ping()
            self._failure = exc

    def ping(self) -> str:
        """The host is up and its log recovered; or raise what opening it raised."""
        if self._failure is not None:
            raise self._failure
        return super().ping()


def start_host(
    store: str,
    directory: str,
    args: tuple[Any, ...],
    options: RayOptions,
) -> Any:
    """Start (or find, if it runs) the host of ``directory``; returns its Ray actor handle.

    Raises:
        What opening the key space or actor raised (InvalidOption, CorruptLog, ...).
    """
    ray = import_ray()
    remote = ray.remote(RayHost).options(
        name=host_name(store, directory),
        namespace=NAMESPACE,
        get_if_exists=True,
        max_restarts=options.max_restarts,
        max_task_retries=0,
        max_concurrency=options.max_concurrency,
        num_cpus=options.num_cpus,
        resources=dict(options.resources),
    )
    deadline = time.monotonic() + options.retry_seconds
    while True:
        actor = remote.remote(*args)
        try:
            _get(ray, actor.ping.remote())
        except ray.exceptions.RayActorError:
            # The name still belongs to a host being stopped (a store closed just before
            # this open): it is released once that host is gone.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        except BaseException:
            ray.kill(actor, no_restart=True)
            raise
        return actor


def _get(ray: Any, ref: Any, timeout: float | None = None) -> Any:
    """``ray.get``, raising a host's own exception rather than Ray's wrapper of it."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
            raise cause from None
        raise


class RayConnection:
    """A handle's way to its host: calls by name, sent again while the host restarts."""

    def __init__(self, actor: Any, name: str, retry_seconds: float) -> None:
        self.name = name
        self._actor = actor
        self._retry_seconds = retry_seconds
        self._ray = import_ray()
        self._refusal: KeyspaceClosed | None = None
        # Pipelined writes are numbered, so the host queues them in order (Host.ordered).
        self._caller = os.urandom(8)
        self._turns = itertools.count()
        self._unanswered: set[int] = set()
        self._mutex = threading.Lock()

    def refuse(self, error: KeyspaceClosed) -> None:
        """Raise ``error`` from every call from now on (the store closed the host)."""
        self._refusal = error

    def _check(self) -> None:
        if self._refusal is not None:
            raise self._refusal

    def call(self, method: str, *args: Any) -> Any:
        """Run the host's ``method(*args)``; its result, or its exception."""
        self._check()
        ray = self._ray
        deadline = time.monotonic() + self._retry_seconds
        pause = 0.05
        while True:
            ref = self._remote(method, args)
            try:
                return _get(ray, ref)
            except ray.exceptions.RayActorError as exc:
                self._check()  # stopped by its store: no use sending it again
                if time.monotonic() + pause > deadline:
                    raise self._gone(exc) from exc
                logger.info("%s: its host died (%s); sending %s again", self.name, exc, method)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def submit(self, method: str, *args: Any) -> Future[Any]:
        """Send the host's ``method(*args)``; the future gets its result (sent again too)."""
        self._check()
        future: Future[Any] = Future()
        deadline = time.monotonic() + self._retry_seconds
        self._send(future, method, args, deadline, 0.05)
        return future

    def submit_ordered(self, method: str, *args: Any) -> Future[Any]:
        """Like :meth:`submit`, queued by the host after this caller's earlier ones."""
        self._check()
        with self._mutex:
            number = next(self._turns)
            self._unanswered.add(number)
        future: Future[Any] = Future()

        def answered(_: Future[Any]) -> None:
            with self._mutex:
                self._unanswered.discard(number)

        future.add_done_callback(answered)
        deadline = time.monotonic() + self._retry_seconds
        try:
            self._send(future, "ordered", (number, method, *args), deadline, 0.05)
        except InvalidInput:
            # Its turn must still pass, or this caller's next write would wait for it.
            skipped: Future[Any] = Future()
            self._send(skipped, "ordered", (number, None, (), {}, None), deadline, 0.05)
            with self._mutex:
                self._unanswered.discard(number)
            raise
        return future

    def _send(
        self, future: Future[Any], method: str, args: tuple[Any, ...], deadline: float, pause: float
    ) -> None:
        ray = self._ray
        if method == "ordered":  # the turn, with the floor as of this sending
            with self._mutex:
                floor = min(self._unanswered, default=args[0])
            sent = ((self._caller, args[0], floor), *args[1:])
            ref = self._remote("ordered", sent)
        else:
            ref = self._remote(method, args)

        def settle(_: Any) -> None:
            try:
                future.set(_get(ray, ref))
            except ray.exceptions.RayActorError as exc:
                if self._refusal is not None:
                    future.set_exception(self._refusal)
                    return
                if time.monotonic() + pause > deadline:
                    future.set_exception(self._gone(exc))
                    return
                _later(
                    pause, lambda: self._send(future, method, args, deadline, min(pause * 2, 1.0))
                )
            except BaseException as exc:  # the caller's answer
                future.set_exception(exc)

        ref.future().add_done_callback(settle)

    def _remote(self, method: str, args: tuple[Any, ...]) -> Any:
        try:
            return getattr(self._actor, method).remote(*args)
        except TypeError as exc:  # Ray could not serialize an argument
            reason = str(exc).splitlines()[0]
            msg = (
                f"{self.name}: {method}'s arguments cannot be sent to its host: they must "
                f"pickle, and a handle, a lock or an open file does not ({reason})"
            )
            raise InvalidInput(msg) from None

    def _gone(self, exc: BaseException) -> ActorStopped:
        return ActorStopped(
            f"{self.name}: its Ray actor is gone and did not come back within "
            f"{self._retry_seconds} s ({exc}); the call may or may not have been applied. "
            "Check the Ray cluster, then open the store again"
        )


def _later(seconds: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
