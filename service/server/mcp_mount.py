"""``/mcp``, loaded on first use.

The MCP SDK is large: importing it costs about 26 MB of resident memory and
over a second of start-up. Most deployments drive the WebSocket only, so the
endpoint (:mod:`service.server.mcp_endpoint`) is imported and its session manager
started when the first request reaches ``/mcp``. The session manager runs in
a task of its own, because its task group must be entered and left by the
same task; shutdown stops that task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from service.server.root import Root

logger = logging.getLogger(__name__)

PATH = "/mcp"


class LazyMcp:
    """An ASGI app standing for the MCP endpoint until it is first needed."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self._app: ASGIApp | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._load()
        await app(scope, receive, send)

    async def _load(self) -> ASGIApp:
        async with self._lock:
            if self._app is not None:
                return self._app
            from service.server.mcp_endpoint import McpEndpoint

            endpoint = McpEndpoint(self.root)
            started = asyncio.Event()

            async def hold() -> None:
                async with endpoint.lifespan():
                    started.set()
                    await self._stop.wait()

            self._holder = asyncio.create_task(hold(), name="mcp-session-manager")
            waiter = asyncio.create_task(started.wait())
            await asyncio.wait({waiter, self._holder}, return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                waiter.cancel()
                await self._holder  # raises what stopped the session manager
            self._app = Router(routes=endpoint.routes)
            logger.info("MCP endpoint loaded", extra={"path": PATH})
            return self._app

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Entered at startup, left at shutdown: stops the session manager if loaded."""
        try:
            yield
        finally:
            self._stop.set()
            if self._holder is not None:
                await self._holder
