"""The composition root: the one place that builds the server, in order.

:func:`compose` builds every part from the settings and wires the features
together; nothing is installed behind anyone's back, and no module keeps a
registry of its own. Each feature plugs in the same way:

- its schema: a ``(namespace, migrations)`` pair registered on the store
  before it opens (the executor's core, prompt records; projects register
  theirs on the storage they are given);
- its router: the wire methods of the feature (:mod:`service.methods`);
- its life: started in :meth:`Root.startup`, stopped in :meth:`Root.shutdown`.

:class:`Root` also keeps the live WebSocket connections (admission limits,
closing them on shutdown) and the parts of the app with a life of their own
(the MCP session manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from service import __version__
from service.dispatch import Peer, Router
from service.methods import build_router
from service.process.backend import choose
from service.process.child import Launcher
from service.process.supervisor import Supervisor
from service.projects import Projects
from service.projects.storage import MESSAGES_TRIMMER
from service.prompts import methods as prompts
from service.services import Services
from service.settings import Settings
from service.store import Store, lifecycle

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

    def register(self, connection: Client) -> None:
        self.connections[connection.id] = connection

    def forget_connection(self, connection: Client) -> None:
        self.connections.pop(connection.id, None)
        self.services.forget(connection)
        if not self.connections:
            self._all_closed.set()

    # --- life ------------------------------------------------------------------

    async def startup(self) -> None:
        services = self.services
        await lifecycle.start(services.core, services.supervisor)
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
        await services.supervisor.shutdown()
        await services.projects.stop()
        await self._exit_stack.aclose()
        for connection in list(self.connections.values()):
            connection.close(1001, "server shutting down")
        if self.connections:
            # The send loops flush their last frames, then close; give them a second.
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 1.0)
        await lifecycle.stop(services.core)

    def health(self) -> dict[str, Any]:
        services = self.services
        supervisor = services.supervisor
        return {
            "status": "ok",
            "version": __version__,
            "containment": supervisor.containment.name,
            "uptime_s": round(time.monotonic() - services.started_mono, 3),
            "connections": len(self.connections),
            "executions": {
                "live": len(supervisor.live),
                "by_state": supervisor.counts_by_state(),
            },
            "limits": self.settings.limits(),
            "store": services.store.health() if services.store is not None else {"enabled": False},
        }


def compose(settings: Settings) -> Root:
    """Build the server from ``settings``: supervisor, store parts, feature
    schemas, projects, router. Nothing runs until :meth:`Root.startup`."""
    supervisor = Supervisor(settings, choose(settings), Launcher(nice=settings.child_nice))
    store = Store(settings) if settings.store_enabled else None
    core = lifecycle.build(store, supervisor)
    if store is not None:
        for namespace, migrations in SCHEMAS:
            store.register_schema(namespace, migrations)
    projects = Projects(settings, supervisor, store)
    if core.retention is not None:
        # The store's cap covers every namespace: project history is trimmed too.
        core.retention.trimmers.append(MESSAGES_TRIMMER)
    services = Services(
        settings=settings,
        supervisor=supervisor,
        core=core,
        projects=projects,
        token=settings.resolved_token(),
    )
    services.busy_checks.append(lambda peer: bool(supervisor.live_owned_by(peer)))
    services.busy_checks.append(projects.follows)
    return Root(services, build_router())
