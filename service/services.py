"""The parts a method handler may use, typed, built once by the composition root.

:class:`Services` is a plain bundle: the settings, the supervisor, the store
and its executor parts, the projects, and the observability parts (metrics,
stats, the process and Claude probes of ``/health``). :func:`service.server.root.compose`
builds it in order and hands it down; handlers reach it as
``ctx.connection.services`` (every :class:`~service.dispatch.Peer` carries it).
Nothing here starts or stops anything: the order of life belongs to
:class:`service.server.root.Root`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service.cluster import Cluster
from service.metrics import Metrics
from service.probes import ClaudeProbe, ProcessReader
from service.process.sinks import Sink
from service.process.supervisor import Supervisor
from service.projects import Projects
from service.settings import Settings
from service.stats import StatsHub
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
    #: Counters and the Prometheus registry (``/metrics``), fed by the router,
    #: the supervisor's executions, the connections and the projects.
    metrics: Metrics
    stats: StatsHub
    process_reader: ProcessReader
    claude_probe: ClaudeProbe
    token: str | None = None
    #: This node in the cluster (None without a store); on SQLite, a node alone.
    cluster: Cluster | None = None
    started_mono: float = field(default_factory=time.monotonic)

    @property
    def store(self) -> Store | None:
        """The SQLite store; None when ``store_enabled`` is false."""
        return self.core.store

    def forget(self, peer: Sink) -> None:
        """``peer`` is gone: its executions get detach timers, its
        subscriptions end."""
        self.supervisor.forget_connection(peer)
        self.projects.forget_connection(peer)
        peer_id = getattr(peer, "id", None)
        if self.cluster is not None and isinstance(peer_id, str):
            self.cluster.remote.forget_connection(peer_id)
