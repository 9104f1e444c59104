"""Everything a connection needs, built once at the entry point.

:class:`Services` bundles the settings, the supervisor, the method router and
the live connections. Features that come with their own state (the store,
projects) hang off it as attributes, started and stopped by :meth:`startup`
and :meth:`shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service import __version__
from service.dispatch import Router
from service.health import ClaudeProbe, ProcessReader
from service.metrics import LiveFigures, Metrics
from service.process.backend import choose
from service.process.child import Launcher
from service.process.state import ExecutionState
from service.process.supervisor import Supervisor
from service.settings import Settings
from service.stats import StatsHub
from service.store import Store

if TYPE_CHECKING:
    from service.connection import Connection
    from service.projects import Projects

logger = logging.getLogger(__name__)

#: Features announced in ``connected`` besides the method names.
FEATURES = ("batch", "seq", "truncation", "backpressure")


@dataclass
class Services:
    settings: Settings
    router: Router
    supervisor: Supervisor
    #: Counters and the Prometheus registry (``/metrics``), fed by the router,
    #: the supervisor's executions, the connections and the projects.
    metrics: Metrics
    stats: StatsHub
    process_reader: ProcessReader
    claude_probe: ClaudeProbe
    token: str | None = None
    #: The SQLite store; None when ``store_enabled`` is false. Features register
    #: their schemas on it in ``build`` (before ``startup`` opens it).
    store: Store | None = None
    #: Projects and agents (built in ``build``, loaded in ``startup``).
    projects: Projects | None = None
    connections: dict[str, Connection] = field(default_factory=dict)
    started_mono: float = field(default_factory=time.monotonic)
    #: Async context managers of app parts with a life of their own (the MCP
    #: session manager): entered at the end of ``startup``, left in ``shutdown``
    #: once the executions are done.
    lifespans: list[Callable[[], contextlib.AbstractAsyncContextManager[Any]]] = field(
        default_factory=list
    )
    #: Whether a connection is busy (so not idle, see ``idle_timeout_s``): a
    #: feature that keeps a connection waiting on it (a subscription, a pending
    #: question) adds its check here.
    busy_checks: list[Callable[[Connection], bool]] = field(default_factory=list)
    _exit_stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        from service.methods import build_router
        from service.store import lifecycle

        supervisor = Supervisor(settings, choose(settings), Launcher(nice=settings.child_nice))
        metrics = Metrics(settings.metrics_enabled)
        process_reader = ProcessReader()
        services = cls(
            settings=settings,
            router=build_router(),
            supervisor=supervisor,
            metrics=metrics,
            stats=StatsHub(metrics, supervisor, process_reader),
            process_reader=process_reader,
            claude_probe=ClaudeProbe(
                settings.claude_bin,
                settings.claude_check_timeout_s,
                settings.claude_check_interval_s,
            ),
            token=settings.resolved_token(),
            store=Store(settings) if settings.store_enabled else None,
        )
        # Observability hooks: one call per event into the metrics.
        metrics.live = services.live_figures
        metrics.method_names = frozenset(services.router.names)
        services.router.on_answer = metrics.request
        supervisor.observers.append(metrics)
        lifecycle.install(services)
        from service.prompts import methods as prompts

        prompts.install(services)
        from service.projects import Projects

        services.projects = Projects(settings, services.supervisor, services.store)
        retention = lifecycle.core(services).retention
        if retention is not None:
            from service.projects.storage import MESSAGES_TRIMMER

            retention.trimmers.append(MESSAGES_TRIMMER)
        services.busy_checks.append(lambda c: bool(services.supervisor.live_owned_by(c)))
        services.busy_checks.append(services.projects.follows)
        services.projects.on_cost = metrics.agent_cost
        # A stats subscriber watches the server: not idle.
        services.busy_checks.append(services.stats.subscribed)
        return services

    def busy(self, connection: Connection) -> bool:
        """Whether ``connection`` owns, follows or waits on something."""
        return any(check(connection) for check in self.busy_checks)

    def capabilities(self) -> list[str]:
        return [*self.router.names, *FEATURES]

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

    def register(self, connection: Connection) -> None:
        self.connections[connection.id] = connection
        self.supervisor.connections.add(connection)

    def forget_connection(self, connection: Connection) -> None:
        self.connections.pop(connection.id, None)
        self.supervisor.connections.discard(connection)
        self.supervisor.forget_connection(connection)
        self.stats.unsubscribe(connection)
        if self.projects is not None:
            self.projects.forget_connection(connection)
        if not self.connections:
            self._all_closed.set()

    # --- life ------------------------------------------------------------------

    async def startup(self) -> None:
        from service.store import lifecycle

        await lifecycle.start(self)
        # After the store's recovery (which names what it kills in each lost
        # execution's reason): whatever is still in the server's own subtree.
        await self.supervisor.startup()
        if self.projects is not None:
            await self.projects.start()
        for lifespan in self.lifespans:
            await self._exit_stack.enter_async_context(lifespan())
        logger.info("services started", extra={"version": __version__})

    async def shutdown(self) -> None:
        """Deny pending tool permissions, cancel every execution with the ladder,
        then close every socket with 1001."""
        if self.projects is not None:
            self.projects.approvals.shutdown()
        await self.stats.stop()
        await self.supervisor.shutdown()
        if self.projects is not None:
            await self.projects.stop()
        await self._exit_stack.aclose()
        connections = list(self.connections.values())
        for connection in connections:
            connection.close(1001, "server shutting down")
        if self.connections:
            # The send loops flush their last frames, then close; give them a second.
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 1.0)
        from service.store import lifecycle

        await lifecycle.stop(self)

    def live_figures(self) -> LiveFigures:
        """Connections, live executions by state and the store, right now."""
        executions = {state.value: 0 for state in ExecutionState if state.is_live}
        for execution in self.supervisor.live.values():
            executions[execution.state.value] += 1
        store_bytes = backlog_bytes = None
        if self.store is not None:
            store = self.store.health()
            store_bytes, backlog_bytes = store["size_bytes"], store["backlog_bytes"]
        return LiveFigures(len(self.connections), executions, store_bytes, backlog_bytes)
