"""The parts a method handler may use, typed, built once by the composition root.

:class:`Services` is a plain bundle: the settings, the supervisor, the store
and its executor parts, and the projects. :func:`service.root.compose` builds
it in order and hands it down; handlers reach it as ``ctx.connection.services``
(every :class:`~service.dispatch.Peer` carries it). Nothing here starts or
stops anything: the order of life belongs to :class:`service.root.Root`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.process.sinks import Sink
from service.process.supervisor import Supervisor
from service.projects import Projects
from service.settings import Settings
from service.store import Store
from service.store.lifecycle import Core


@dataclass
class Services:
    settings: Settings
    supervisor: Supervisor
    #: The executor's parts of the store (store, recorder, attacher, retention).
    core: Core
    #: Projects and agents (loaded by ``Root.startup``).
    projects: Projects
    token: str | None = None
    started_mono: float = field(default_factory=time.monotonic)
    #: Whether a peer is busy (so not idle, see ``idle_timeout_s``): a feature
    #: that keeps a peer waiting on it (an execution it owns, a subscription, a
    #: pending question) adds its check here, in ``root.compose``.
    busy_checks: list[Callable[[Sink], bool]] = field(default_factory=list)

    @property
    def store(self) -> Store | None:
        """The SQLite store; None when ``store_enabled`` is false."""
        return self.core.store

    def busy(self, peer: Sink) -> bool:
        """Whether ``peer`` owns, follows or waits on something."""
        return any(check(peer) for check in self.busy_checks)

    def forget(self, peer: Sink) -> None:
        """``peer`` is gone: its executions get detach timers, its
        subscriptions end."""
        self.supervisor.forget_connection(peer)
        self.projects.forget_connection(peer)
