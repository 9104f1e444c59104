"""A connection without a socket, for callers inside the server process.

The MCP endpoint runs every tool through the same JSON-RPC router as a
WebSocket client would, so it gets the same validation, limits, audit lines,
errors and ownership rules with no second implementation of any method.
:class:`LocalConnection` is a :class:`~service.dispatch.Peer`, as a
WebSocket :class:`~service.server.connection.Connection` is; notifications land
in its bounded :class:`~service.outbox.Outbox`, output chunks are dropped
(and counted) for it alone when its reader falls behind, exactly as for a
slow WebSocket client.

Use it as an async context manager: leaving it forgets the connection, so
live executions it still owns get the usual detach timer.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from service import protocol
from service.dispatch import CallContext
from service.logs import ContextAdapter
from service.outbox import Outbox
from service.protocol import Frame, Request, error_from_wire

if TYPE_CHECKING:
    from service.server.root import Root

logger = logging.getLogger(__name__)


class LocalConnection:
    def __init__(self, root: Root, peer: str, kind: str = "local") -> None:
        self.id = f"{kind}-{uuid.uuid4().hex}"
        self.root = root
        self.services = root.services
        self.peer = peer
        self.peer_host = peer.rsplit(":", 1)[0]
        self.outbox: Outbox[Frame] = Outbox(root.settings.max_pending_bytes)
        self.log = ContextAdapter(logger, {"connection_id": self.id, "peer": peer})
        self._ids = itertools.count(1)

    def __hash__(self) -> int:
        return hash(self.id)

    async def __aenter__(self) -> LocalConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    # --- Sink ----------------------------------------------------------------

    def offer(self, frame: Frame, *, droppable: bool) -> bool:
        queued = self.outbox.offer(frame, droppable=droppable)
        if not queued and droppable:
            self.services.metrics.dropped_chunk()
        return queued

    async def put(self, frame: Frame) -> None:
        await self.outbox.put(frame)

    @property
    def closed(self) -> bool:
        return self.outbox.closed

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.offer(protocol.frame(method, params), droppable=False)

    # --- use -----------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run ``method`` through the router; its result, or the RpcError it
        answered with (the same typed error a WebSocket client would see)."""
        request = Request(method, params or {}, next(self._ids), False)
        response = await self.root.router.call(CallContext(self, request))
        assert response is not None
        if "error" in response:
            raise error_from_wire(response["error"])
        return response.get("result")

    async def next_frame(self) -> Frame:
        """The next notification sent to this connection, in order; raises
        OutboxClosed once it is closed and drained."""
        return await self.outbox.get()

    def close(self) -> None:
        """Stop receiving; live executions owned only by this connection get the
        detach timer. Safe to call twice."""
        if not self.outbox.closed:
            self.outbox.close()
            self.services.forget(self)
