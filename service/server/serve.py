"""Running the app under uvicorn, with an orderly shutdown.

On SIGTERM or SIGINT uvicorn stops accepting; then, before uvicorn closes the
sockets its own way, :class:`ExecutorServer` cancels every execution with the
kill ladder and closes every WebSocket with 1001, so clients see their
``process.completed`` and a clean close. The process exits 0 within
``kill_grace_s`` plus about a second.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from service import __version__, memory
from service.hosts import is_loopback_host
from service.process.reaper import Reaper
from service.projects.grants import own_mcp_url
from service.server.app import create_app
from service.server.auth import TokenRedactor
from service.server.handshake import QuietRefusalProtocol, protocol_with_handshake_timeout
from service.server.root import Root, compose
from service.settings import Settings

# Named after the package, not this module: tools parse the `listening` line
# and filter on this logger name (docs/observability.md).
logger = logging.getLogger("service.server")


class ExecutorServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, root: Root) -> None:
        super().__init__(config)
        self.root = root
        self.reaper = Reaper(root.services.supervisor)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        memory.install(asyncio.get_running_loop())
        self.reaper.start()
        await self.root.startup()
        await super().startup(sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                projects = self.root.services.projects
                if projects.approvals.mcp_url is None:
                    projects.approvals.mcp_url = own_mcp_url(host, port, self.config.is_ssl)
                logger.info(
                    "listening",
                    extra={
                        "host": host,
                        "port": port,
                        "tls": self.config.is_ssl,
                        "version": __version__,
                    },
                )

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the captured signal after a graceful shutdown, which
        # makes the exit status 128+SIGTERM; a clean shutdown here exits 0.
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        logger.info("shutting down")
        for server in self.servers:
            server.close()
        await self.root.shutdown()
        await self.reaper.stop()
        await super().shutdown(sockets)
        logger.info("stopped")


def build_config(settings: Settings, root: Root) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(root),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_with_handshake_timeout(settings.handshake_timeout_s),
        ws=QuietRefusalProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.kill_grace_s) + 2,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    token = settings.resolved_token()
    if token is not None:
        # Uvicorn and websockets log request paths (with ?token=) and, at DEBUG,
        # request headers; no log line may carry the secret.
        redactor = TokenRedactor(token)
        for handler in logging.getLogger().handlers:
            handler.addFilter(redactor)
    if not is_loopback_host(settings.host) and token is None:
        logger.warning(
            "binding %s without a token: anyone who can reach this address can run commands",
            settings.host,
        )
    if settings.allowed_commands:
        logger.info(
            "allow-list in force: %s",
            ", ".join(settings.allowed_commands),
            extra={"allowed_commands": settings.allowed_commands},
        )
    else:
        logger.info("no allow-list: any command may run", extra={"allowed_commands": []})
    root = compose(settings)
    server = ExecutorServer(build_config(settings, root), root)
    server.run()
