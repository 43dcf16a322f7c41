"""Runtimes: what hosts an actor's core. Each implements :class:`Runtime`.

A runtime gives every actor a *home*, where commands sent without waiting run (see
``actors._core``), and the future type its commands return. The core itself, the log and
every rule of the write path are the same under every runtime.
"""

from __future__ import annotations

from typing import Any, Protocol

from actors._core import ActorCore, Home
from actors._future import Future
from actors.runtimes._pykka import PykkaRuntime

__all__ = ["PykkaRuntime", "Runtime"]


class Runtime(Protocol):
    """What a store needs from the thing that runs its actors."""

    name: str
    """Short name, as given to ``Store.open(runtime=...)``."""

    future_type: type[Future[Any]]
    """The future commands return (a subclass of :class:`actors.Future`)."""

    def start(self, core: ActorCore) -> Home:
        """Start the actor's home and attach it to ``core``; returns it."""
