"""One WebSocket client: its receive loop, its send loop, its outbox.

Two sibling tasks per connection, as Starlette's ``StreamingResponse`` does:
the receiver parses frames and runs requests one after another (so a client
that sends ``execute`` then ``control`` sees them in that order); the sender
drains the outbox into the socket. Whichever ends first cancels the other, and
the ``finally`` hands the connection's executions to the detach timers.

A bad frame never closes the connection: it gets its error response.

An idle connection is closed with 4001 "idle timeout" after
``idle_timeout_s``: idle means no frame received from the client (WebSocket
pongs are not frames here) while it owns no live execution, follows no
project and waits on nothing else (``Services.busy``). 1001 stays the
shutdown's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from service import __version__
from service.dispatch import CallContext
from service.errors import INVALID_REQUEST, RateLimited, RpcError
from service.logs import ContextAdapter
from service.outbox import Outbox, OutboxClosed
from service.protocol import (
    Frame,
    encode,
    encode_reply,
    error_response,
    notification,
    parse_frame,
)

if TYPE_CHECKING:
    from service.server.root import Root

logger = logging.getLogger(__name__)

#: WebSocket close codes used by the server.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_IDLE = 4001


class TokenBucket:
    """Requests per second with a burst allowance; refills continuously."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = float(burst)
        self.tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection:
    def __init__(self, websocket: WebSocket, root: Root) -> None:
        self.id = uuid.uuid4().hex
        self.websocket = websocket
        self.root = root
        self.services = root.services
        settings = root.settings
        self.outbox: Outbox[str] = Outbox(settings.max_pending_bytes)
        self.bucket = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else "unknown"
        self.peer_host = client.host if client else "unknown"
        self.close_code = CLOSE_GOING_AWAY
        self.close_reason = ""
        #: When the client last sent a frame, or was last seen busy (monotonic).
        self.last_active = time.monotonic()
        self.log = ContextAdapter(logger, {"connection_id": self.id, "peer": self.peer})

    def __hash__(self) -> int:
        return hash(self.id)

    # --- Sink --------------------------------------------------------------

    def offer(self, frame: Frame, *, droppable: bool) -> bool:
        queued = self.send_text(frame.text, droppable=droppable)
        if not queued and droppable:
            self.services.metrics.dropped_chunk()
        return queued

    async def put(self, frame: Frame) -> None:
        await self.outbox.put(frame.text)

    @property
    def closed(self) -> bool:
        return self.outbox.closed

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send_text(encode(notification(method, params)), droppable=False)

    def send_text(self, text: str, *, droppable: bool) -> bool:
        """Queue one encoded frame (a response, a notification); False when it
        was not queued. A client that stopped reading is closed with 1008."""
        queued = self.outbox.offer(text, droppable=droppable)
        if not queued and self.outbox.overflowed and self.close_code != CLOSE_POLICY:
            self.close_code = CLOSE_POLICY
            self.close_reason = "client is not reading its responses"
            self.log.warning("outbox overflow; closing", extra={"bytes": self.outbox.pending_bytes})
        return queued

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Send what is queued, then close the socket with ``code``."""
        self.close_code = code
        self.close_reason = reason
        self.outbox.close()

    # --- loops ---------------------------------------------------------------

    async def serve(self) -> None:
        """Run the connection until either side closes. The socket is accepted."""
        root = self.root
        self.notify(
            "connected",
            {
                "session_id": self.id,
                "version": __version__,
                "capabilities": root.capabilities(),
            },
        )
        self.log.info("connected")
        receiver = asyncio.create_task(self._receive_loop(), name=f"conn:{self.id}:recv")
        sender = asyncio.create_task(self._send_loop(), name=f"conn:{self.id}:send")
        watcher = asyncio.create_task(self._idle_watch(), name=f"conn:{self.id}:idle")
        tasks = (receiver, sender, watcher)
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.outbox.close()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(
                    result, WebSocketDisconnect | OutboxClosed | OSError
                ):
                    self.log.error("connection task failed", exc_info=result)
            root.forget_connection(self)
            self.log.info("disconnected", extra={"dropped_frames": self.outbox.dropped_frames})

    async def _send_loop(self) -> None:
        websocket = self.websocket
        with contextlib.suppress(OutboxClosed):
            while True:
                frame = await self.outbox.get()
                if self.outbox.overflowed:
                    break
                await websocket.send_text(frame)
        with contextlib.suppress(Exception):
            await websocket.close(self.close_code, self.close_reason)

    async def _idle_watch(self) -> None:
        """Close the connection with 4001 once it has been idle ``idle_timeout_s``."""
        timeout_s = self.services.settings.idle_timeout_s
        # Checked a few times per period: a connection that stops being busy is
        # closed at most a quarter period late.
        step_s = min(timeout_s / 4, 5.0)
        while True:
            await asyncio.sleep(step_s)
            now = time.monotonic()
            if self.root.busy(self):
                self.last_active = now
                continue
            if now - self.last_active >= timeout_s:
                self.log.info("idle timeout; closing", extra={"idle_timeout_s": timeout_s})
                self.close(CLOSE_IDLE, "idle timeout")
                return

    async def _receive_loop(self) -> None:
        websocket = self.websocket
        while True:
            message = await websocket.receive()
            self.last_active = time.monotonic()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                frame = error_response(
                    None,
                    RpcError(
                        "binary frames are not accepted: send JSON text", code=INVALID_REQUEST
                    ),
                )
                self.send_text(encode(frame), droppable=False)
                continue
            await self.handle_frame(text)

    async def handle_frame(self, text: str) -> None:
        parsed = parse_frame(text)
        router = self.root.router
        responses: list[dict[str, Any]] = []
        for item in parsed.items:
            if isinstance(item, dict):
                responses.append(item)
                continue
            if not self.bucket.take():
                self.log.warning("rate limited", extra={"method": item.method})
                self.services.metrics.request(item.method, RateLimited.code)
                if not item.is_notification:
                    limited = RateLimited(
                        "rate limit reached",
                        {"rate_per_s": self.services.settings.rate_limit_per_s},
                    )
                    responses.append(error_response(item.id, limited))
                continue
            response = await router.call(CallContext(self, item))
            if response is not None:
                responses.append(response)
        if not responses:
            return
        reply = responses if parsed.batch else responses[0]
        self.send_text(encode_reply(reply), droppable=False)
