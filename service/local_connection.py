"""A connection without a socket, for callers inside the server process.

The MCP endpoint runs every tool through the same JSON-RPC router as a
WebSocket client would, so it gets the same validation, limits, audit lines,
errors and ownership rules with no second implementation of any method.
:class:`LocalConnection` offers what method handlers use of a
:class:`~service.connection.Connection` (``id``, ``services``, ``peer``,
``peer_host``, ``log``, ``outbox``, ``offer``, ``notify``); notifications land
in its bounded :class:`~service.outbox.Outbox`, output chunks are dropped
(and counted) for it alone when its reader falls behind, exactly as for a
slow WebSocket client.

Use it as an async context manager: leaving it forgets the connection, so
live executions it still owns get the usual detach timer.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import orjson

from service.client import error_from_wire
from service.dispatch import CallContext
from service.logs import ContextAdapter
from service.outbox import Outbox, OutboxClosed
from service.protocol import Request, encode, notification

if TYPE_CHECKING:
    from service.connection import Connection
    from service.services import Services

logger = logging.getLogger(__name__)


class LocalConnection:
    def __init__(self, services: Services, peer: str, kind: str = "local") -> None:
        self.id = f"{kind}-{uuid.uuid4().hex}"
        self.services = services
        self.peer = peer
        self.peer_host = peer.rsplit(":", 1)[0]
        self.opened_at = time.time()
        self.outbox = Outbox(services.settings.max_pending_bytes)
        self.log = ContextAdapter(logger, {"connection_id": self.id, "peer": peer})
        self._ids = itertools.count(1)

    def __hash__(self) -> int:
        return hash(self.id)

    async def __aenter__(self) -> LocalConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    # --- Sink ----------------------------------------------------------------

    def offer(self, frame: str, *, droppable: bool) -> bool:
        queued = self.outbox.offer(frame, droppable=droppable)
        if not queued and droppable:
            self.services.metrics.dropped_chunk()
        return queued

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.offer(encode(notification(method, params)), droppable=False)

    # --- use -----------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run ``method`` through the router; its result, or the RpcError it
        answered with (the same typed error a WebSocket client would see)."""
        request = Request(method, params or {}, next(self._ids), False)
        ctx = CallContext(cast("Connection", self), request)
        response = await self.services.router.call(ctx)
        assert response is not None
        if "error" in response:
            raise error_from_wire(response["error"])
        return response.get("result")

    async def notifications(self) -> AsyncIterator[dict[str, Any]]:
        """Every notification sent to this connection, decoded, in order, until
        it is closed."""
        while True:
            try:
                frame = await self.outbox.get()
            except OutboxClosed:
                return
            for message in self.decode(frame):
                yield message

    @staticmethod
    def decode(frame: str) -> list[dict[str, Any]]:
        """The notifications in one outbox frame."""
        message = orjson.loads(frame)
        items = message if isinstance(message, list) else [message]
        return [item for item in items if isinstance(item, dict) and "method" in item]

    def close(self) -> None:
        """Stop receiving; live executions owned only by this connection get the
        detach timer. Safe to call twice."""
        if not self.outbox.closed:
            self.outbox.close()
            self.services.forget_connection(cast("Connection", self))
