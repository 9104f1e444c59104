"""The HTTP protocol with a handshake deadline.

Uvicorn's httptools protocol waits for a request head as long as the client
likes: a client that opens TCP connections and trickles (or never sends) its
headers holds a socket and memory each. :func:`protocol_with_handshake_timeout`
returns the protocol class with a deadline: from the moment the connection is
made (or a keep-alive request begins) until its request head is complete.
Past the deadline the connection is closed. After the head, a WebSocket
upgrade is accepted or refused by the app at once.

A TLS handshake happens before the protocol sees the connection; asyncio
bounds it with its own ``ssl_handshake_timeout`` (60 s).

A WebSocket handshake the app refuses with an HTTP response (401, 403: see
:mod:`service.server.auth`, which logs the refusal once as an audit line) is a
decision, not a failure: :class:`QuietRefusalProtocol` keeps uvicorn from
also logging it as the ERROR "ASGI callable returned without completing
handshake", which an unauthenticated peer could otherwise repeat at will.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)


class HandshakeTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request head is late."""

    handshake_timeout_s: float = 10.0
    _handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_handshake_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_handshake_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._handshake_timer is None:
            self._arm_handshake_timer()

    def on_headers_complete(self) -> None:
        self._disarm_handshake_timer()
        super().on_headers_complete()

    def _arm_handshake_timer(self) -> None:
        self._disarm_handshake_timer()
        self._handshake_timer = self.loop.call_later(
            self.handshake_timeout_s, self._handshake_expired
        )

    def _disarm_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        client = self.client
        logger.info(
            "handshake timeout: closing the connection",
            extra={
                "peer": f"{client[0]}:{client[1]}" if client else None,
                "timeout_s": self.handshake_timeout_s,
            },
        )
        self.transport.close()


def protocol_with_handshake_timeout(timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this deadline."""
    return type(
        "HandshakeTimeoutProtocol",
        (HandshakeTimeoutProtocol,),
        {"handshake_timeout_s": timeout_s},
    )


class QuietRefusalProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, for which an HTTP response
    sent instead of the upgrade completes the handshake: refused, on purpose."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            # The response is out and the transport closed; uvicorn would
            # otherwise report the app as having failed the handshake.
            self.handshake_complete = True
