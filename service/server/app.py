"""The Starlette application: the WebSocket endpoint, the MCP endpoint
(``/mcp``, :mod:`service.server.mcp_endpoint`), the health routes and ``/metrics``."""

from __future__ import annotations

import logging

from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from service.errors import LimitReached
from service.protocol import encode, error_response
from service.server import health as health_check
from service.server.auth import AccessMiddleware
from service.server.connection import CLOSE_TRY_AGAIN, Connection
from service.server.mcp_mount import PATH as MCP_PATH
from service.server.mcp_mount import LazyMcp
from service.server.root import Root

logger = logging.getLogger(__name__)


def create_app(root: Root) -> Starlette:
    """The ASGI app serving ``root``. Startup and shutdown of the root
    belong to the server (:mod:`service.server.serve`), which orders them around
    the sockets."""

    async def websocket_endpoint(websocket: WebSocket) -> None:
        connection = Connection(websocket, root)
        await websocket.accept()
        # Admit and register with no await between: concurrent handshakes cannot
        # all slip under the limit.
        refusal = root.admit(connection.peer_host)
        if refusal is not None:
            connection.log.warning("connection refused: %s", refusal)
            frame = encode(error_response(None, LimitReached(refusal)))
            await websocket.send_text(frame)
            await websocket.close(CLOSE_TRY_AGAIN, "connection limit reached")
            return
        root.register(connection)
        await connection.serve()

    async def health(request: Request) -> JSONResponse:
        status_code, document = await health_check.report(root)
        return JSONResponse(document, status_code=status_code)

    async def metrics(request: Request) -> Response:
        registry = root.services.metrics.registry
        assert registry is not None  # the route exists only with metrics enabled
        # The text format, or OpenMetrics when the scraper asks for it.
        encode_metrics, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode_metrics(registry), headers={"Content-Type": content_type})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def run_credential_ok(token: str) -> bool:
        return root.services.projects.approvals.grants.find(token) is not None

    routes = [
        WebSocketRoute("/ws/mcp", websocket_endpoint),
        WebSocketRoute("/ws", websocket_endpoint),
        Route("/health", health),
        Route("/healthz", healthz),
    ]
    if root.services.metrics.registry is not None:
        routes.append(Route("/metrics", metrics))
    mcp = LazyMcp(root)
    routes.append(Route(MCP_PATH, mcp))
    root.lifespans.append(mcp.lifespan)
    middleware = [
        Middleware(
            AccessMiddleware,
            token=root.services.token,
            allowed_origins=root.settings.allowed_origins,
            bind_host=root.settings.host,
            run_credential_ok=run_credential_ok,
        )
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.root = root
    return app
