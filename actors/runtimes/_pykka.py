"""The default runtime: each actor's home is a pykka actor (a daemon thread of its own).

pykka is used through its public API only: an actor class, ``tell`` and ``stop``. The home
actor's inbox carries nothing but wake-ups; the commands themselves wait in the core's own
queue, where a blocking caller can run them without the home thread at all.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

import pykka

from actors._core import ActorCore, Home
from actors._future import Future

__all__ = ["PykkaFuture", "PykkaRuntime"]

T = TypeVar("T")

_WAKE = object()
_NOT_COMPUTED: Any = pykka.Future()._get_hook_result  # pykka's "hook not run yet" marker


class PykkaFuture(Future[T], pykka.Future[T]):
    """The project's future, also a ``pykka.Future`` (``pykka.get_all``, ``map``, ...).

    ``get`` times out with ``pykka.Timeout``, as every pykka future does.
    """

    timeout_error = pykka.Timeout

    def __init__(self) -> None:
        # pykka.Future.__init__ sets just these two; doing it here skips the chain of
        # __init__ calls (a third of a future's cost).
        Future.__init__(self)
        self._get_hook = None
        self._get_hook_result = _NOT_COMPUTED

    def get(self, *, timeout: float | None = None) -> T:
        """The value, or raise the exception; wait up to ``timeout`` seconds (None: forever).

        Raises:
            pykka.Timeout: Nothing was set within ``timeout``.
        """
        if self._get_hook is not None:  # a future derived with map() and friends
            return pykka.Future.get(self, timeout=timeout)
        return Future.get(self, timeout=timeout)


class _HomeActor(pykka.ThreadingActor):
    # A store left open must not keep the interpreter from exiting: with non-daemon actor
    # threads, exit waits for them forever. Open stores are closed by an atexit hook instead
    # (see actors._store), which runs the queued commands and syncs before the threads go.
    use_daemon_thread = True

    def __init__(self, core: ActorCore, home: PykkaHome) -> None:
        super().__init__()
        self._core = core
        self._home = home

    def on_start(self) -> None:
        self._home.ident = threading.get_ident()

    def on_receive(self, message: Any) -> None:
        if message is _WAKE:
            self._core.drain()  # the waker handed this thread the execution right


class PykkaHome(Home):
    """One actor's home thread."""

    def __init__(self, core: ActorCore) -> None:
        self.ident: int | None = None
        self._ref = _HomeActor.start(core, self)

    def wake(self) -> None:
        """Queue a wake-up: the home thread then drains the core."""
        self._ref.tell(_WAKE)

    def stop(self) -> None:
        """Let the home thread finish (after the core shut down)."""
        self._ref.stop(block=False)

    def is_home(self) -> bool:
        """Whether the calling thread is this home's."""
        return threading.get_ident() == self.ident


class PykkaRuntime:
    """Actors on pykka threads in this process (the default, ``runtime="threads"``)."""

    name = "threads"
    future_type: type[Future[Any]] = PykkaFuture

    def start(self, core: ActorCore) -> Home:
        """Start the home actor and attach it to ``core``."""
        home = PykkaHome(core)
        core.attach(home)
        return home
