"""Who may connect: the token and the Origin check, before any upgrade.

A pure ASGI middleware, so it guards every HTTP endpoint and the WebSocket
handshake alike (``/healthz`` stays open for liveness probes). A refused
WebSocket handshake gets a plain HTTP response (401 without a valid token,
403 for a foreign Origin) instead of an upgrade.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})


def presented_token(scope: Scope) -> str | None:
    """The token from ``Authorization: Bearer`` or from ``?token=``."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


def token_ok(expected: str, scope: Scope) -> bool:
    given = presented_token(scope)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def origin_ok(scope: Scope, allowed: Sequence[str]) -> bool:
    """Requests without Origin (non-browser clients) pass; a browser's Origin must
    be the server's own host or listed in ``allowed``."""
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin")
    if origin is None:
        return True
    origin_text = origin.decode("latin-1")
    if "*" in allowed or origin_text in allowed:
        return True
    host = headers.get(b"host", b"").decode("latin-1")
    return bool(host) and urlsplit(origin_text).netloc == host


class AccessMiddleware:
    def __init__(self, app: ASGIApp, token: str | None, allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.token = token
        self.allowed_origins = list(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.token is not None and not token_ok(self.token, scope):
            await self._refuse(scope, send, 401, "missing or invalid token")
            return
        if not origin_ok(scope, self.allowed_origins):
            await self._refuse(scope, send, 403, "origin not allowed")
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, reason: str) -> None:
        client = scope.get("client")
        logger.warning(
            "refused %s %s: %s",
            scope["type"],
            scope["path"],
            reason,
            extra={"peer": f"{client[0]}:{client[1]}" if client else None, "status": status},
        )
        body = ('{"error": "%s"}' % reason).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
