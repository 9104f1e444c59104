"""The composition root: the one place that builds the server, in order.

:func:`compose` builds every part from the settings and wires the features
together; nothing is installed behind anyone's back, and no module keeps a
registry of its own. Each feature plugs in the same way:

- its schema: a ``(namespace, migrations)`` pair registered on the store
  before it opens (the executor's core, prompt records; projects register
  theirs on the storage they are given);
- its router: the wire methods of the feature (:mod:`service.server.methods`);
- its life: started in :meth:`Root.startup`, stopped in :meth:`Root.shutdown`.

:class:`Root` also keeps the live WebSocket connections (admission limits,
closing them on shutdown) and the parts of the app with a life of their own
(the MCP session manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from service import __version__
from service.cluster import Cluster, node_id_of
from service.cluster.figures import ClusterCollector
from service.dispatch import Peer, Router
from service.metrics import Metrics
from service.metrics_collector import LiveFigures
from service.probes import ClaudeProbe, ProcessReader
from service.process.backend import choose
from service.process.launcher import Launcher
from service.process.state import ExecutionState
from service.process.supervisor import Supervisor
from service.projects import Projects
from service.projects.storage import MESSAGES_TRIMMER
from service.prompts import methods as prompts
from service.server.methods import build_router
from service.services import Services
from service.settings import Settings
from service.stats import StatsHub
from service.store import lifecycle, make_store

logger = logging.getLogger(__name__)

#: Features announced in ``connected`` besides the method names.
FEATURES = ("batch", "seq", "truncation", "backpressure")

#: The store schemas of the features, in the order they are registered.
SCHEMAS = (prompts.SCHEMA,)


class Client(Peer, Protocol):
    """A peer with a socket to close (a WebSocket connection)."""

    def close(self, code: int, reason: str) -> None: ...


@dataclass
class Root:
    services: Services
    router: Router
    connections: dict[str, Client] = field(default_factory=dict)
    #: Whether a connection is busy (so not idle, see ``idle_timeout_s``): a
    #: feature that keeps a connection waiting on it (an execution it owns, a
    #: subscription, a pending question) adds its check here, in ``compose``.
    busy_checks: list[Callable[[Client], bool]] = field(default_factory=list)
    #: Async context managers of app parts with a life of their own (the MCP
    #: session manager): entered at the end of ``startup``, left in ``shutdown``
    #: once the executions are done.
    lifespans: list[Callable[[], contextlib.AbstractAsyncContextManager[Any]]] = field(
        default_factory=list
    )
    _exit_stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def capabilities(self) -> list[str]:
        cluster = self.services.cluster
        remote = cluster is not None and cluster.shared and self.settings.cluster_remote_execute
        return [*self.router.names, *FEATURES, *(["execute.node"] if remote else [])]

    # --- connections ---------------------------------------------------------

    def admit(self, peer_host: str) -> str | None:
        """Why a new connection from ``peer_host`` is refused, or None."""
        settings = self.settings
        if len(self.connections) >= settings.max_connections:
            return f"too many connections (max {settings.max_connections})"
        same_host = Counter(c.peer_host for c in self.connections.values())[peer_host]
        if same_host >= settings.max_connections_per_ip:
            return f"too many connections from {peer_host} (max {settings.max_connections_per_ip})"
        return None

    def busy(self, connection: Client) -> bool:
        """Whether ``connection`` owns, follows or waits on something."""
        return any(check(connection) for check in self.busy_checks)

    def register(self, connection: Client) -> None:
        self.connections[connection.id] = connection

    def forget_connection(self, connection: Client) -> None:
        self.connections.pop(connection.id, None)
        self.services.forget(connection)
        self.services.stats.unsubscribe(connection)
        if not self.connections:
            self._all_closed.set()

    # --- life ------------------------------------------------------------------

    async def startup(self) -> None:
        services = self.services
        await lifecycle.start(services.core, services.supervisor)
        if services.cluster is not None:
            # After the store's recovery: the leftovers other nodes marked lost.
            await services.cluster.start()
        # After the store's recovery (which names what it kills in each lost
        # execution's reason): whatever is still in the server's own subtree.
        await services.supervisor.startup()
        await services.projects.start()
        for lifespan in self.lifespans:
            await self._exit_stack.enter_async_context(lifespan())
        logger.info("services started", extra={"version": __version__})

    async def shutdown(self) -> None:
        """Deny pending tool permissions, cancel every execution with the ladder,
        then close every socket with 1001."""
        services = self.services
        services.projects.approvals.shutdown()
        await services.stats.stop()
        await services.supervisor.shutdown()
        await services.projects.stop()
        if services.cluster is not None:
            await services.cluster.stop()
        await self._exit_stack.aclose()
        for connection in list(self.connections.values()):
            connection.close(1001, "server shutting down")
        if self.connections:
            # The send loops flush their last frames, then close; give them a second.
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 1.0)
        await lifecycle.stop(services.core)

    def live_figures(self) -> LiveFigures:
        """Connections, live executions by state and the store, right now."""
        services = self.services
        executions = {state.value: 0 for state in ExecutionState if state.is_live}
        for execution in services.supervisor.live.values():
            executions[execution.state.value] += 1
        store_bytes = backlog_bytes = None
        if services.store is not None:
            store = services.store.health()
            store_bytes, backlog_bytes = store["size_bytes"], store["backlog_bytes"]
        return LiveFigures(len(self.connections), executions, store_bytes, backlog_bytes)


def compose(settings: Settings) -> Root:
    """Build the server from ``settings``: supervisor, store parts, feature
    schemas, projects, router. Nothing runs until :meth:`Root.startup`."""
    supervisor = Supervisor(settings, choose(settings), Launcher(nice=settings.child_nice))
    metrics = Metrics(settings.metrics_enabled)
    process_reader = ProcessReader()
    store = make_store(settings) if settings.store_enabled else None
    node_id = node_id_of(settings)
    core = lifecycle.build(store, supervisor, node_id=node_id)
    if store is not None:
        for namespace, migrations in SCHEMAS:
            store.register_schema(namespace, migrations)
    projects = Projects(settings, supervisor, store)
    cluster = (
        Cluster(store, supervisor, projects, node_id, core.recorder.server_id, core.recorder.flush)
        if store is not None and core.recorder is not None
        else None
    )
    if core.retention is not None:
        # The store's cap covers every namespace: project history is trimmed too.
        core.retention.trimmers.append(MESSAGES_TRIMMER)
    services = Services(
        settings=settings,
        supervisor=supervisor,
        core=core,
        projects=projects,
        metrics=metrics,
        stats=StatsHub(metrics, supervisor, process_reader),
        process_reader=process_reader,
        claude_probe=ClaudeProbe(
            settings.claude_bin, settings.claude_check_timeout_s, settings.claude_check_interval_s
        ),
        token=settings.resolved_token(),
        cluster=cluster,
    )
    root = Root(services, build_router())
    # Observability hooks: one call per event into the metrics.
    metrics.live = root.live_figures
    metrics.method_names = frozenset(root.router.names)
    root.router.on_answer = metrics.request
    supervisor.observers.append(metrics)
    projects.on_cost = metrics.agent_cost
    if cluster is not None and metrics.registry is not None:
        metrics.registry.register(ClusterCollector(cluster))
    root.busy_checks.append(lambda peer: bool(supervisor.live_owned_by(peer)))
    root.busy_checks.append(projects.follows)
    # A stats subscriber watches the server: not idle.
    root.busy_checks.append(services.stats.subscribed)
    return root
