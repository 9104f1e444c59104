"""Who may connect: the token, the Origin and the Host checks, before any upgrade.

A pure ASGI middleware, so it guards every HTTP endpoint and the WebSocket
handshake alike (``/healthz`` stays open for liveness probes). A refused
WebSocket handshake gets a plain HTTP response (401 without a valid token,
403 for a foreign Origin or Host) instead of an upgrade.

DNS rebinding (GHSA-vj7q-gjh5-988w): a page of ``evil.example`` whose name
is made to resolve to 127.0.0.1 reaches a loopback server with
``Origin: http://evil.example:8003`` and ``Host: evil.example:8003``. So the
server's "own" origin is never taken from the Host header: an Origin passes
when it is listed in ``allowed_origins`` or names a loopback host (or the
bound address) on the server's own port; and a server bound to loopback also
refuses a Host header that is not a loopback name, which shuts out the
rebinding page's plain GETs (browsers send no Origin on those).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.hosts import is_loopback_host

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})
#: Where an agent's per-run credential is accepted (the MCP endpoint, whose
#: tools then allow it ``approve`` alone).
RUN_CREDENTIAL_PATHS = frozenset({"/mcp", "/mcp/"})
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def presented_token(scope: Scope) -> str | None:
    """The token from ``Authorization: Bearer`` or from ``?token=``."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return str(credentials.strip())
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return str(values[0]) if values else None


def token_ok(expected: str, scope: Scope) -> bool:
    """Whether the request presents ``expected``; compared in constant time."""
    given = presented_token(scope)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _server_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None


class AccessPolicy:
    """The Origin and Host rules, from ``allowed_origins`` and the bound address."""

    def __init__(self, allowed_origins: Sequence[str], bind_host: str | None = None) -> None:
        self.any_origin = "*" in allowed_origins
        self.allowed = {normalize_origin(o) for o in allowed_origins if o != "*"}
        self.allowed_hostnames = {urlsplit(o).hostname for o in self.allowed} - {None}
        self.bind_host = (bind_host or "").lower().strip("[]")
        self.loopback_only = is_loopback_host(self.bind_host)

    def _own_hostname(self, hostname: str) -> bool:
        if is_loopback_host(hostname):
            return True
        wildcard = self.bind_host in ("", "0.0.0.0", "::")
        return not wildcard and hostname == self.bind_host

    def origin_ok(self, scope: Scope) -> bool:
        """Requests without Origin (non-browser clients) pass; a browser's Origin must
        be listed in ``allowed_origins`` or be the server's own (a loopback name or the
        bound address, on the server's port)."""
        origin = _header(scope, b"origin")
        if origin is None:
            return True
        text = normalize_origin(origin)
        if self.any_origin or text in self.allowed:
            return True
        try:
            parts = urlsplit(text)
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        hostname = parts.hostname
        return bool(hostname) and self._own_hostname(str(hostname)) and port == _server_port(scope)

    def host_ok(self, scope: Scope) -> bool:
        """On a loopback bind, the Host header must name a loopback host (or the host
        of an allowed origin): a DNS-rebound name is refused."""
        if not self.loopback_only or self.any_origin:
            return True
        host = _header(scope, b"host")
        if host is None:
            return True
        try:
            hostname = urlsplit("//" + host).hostname
        except ValueError:
            return False
        return is_loopback_host(hostname) or hostname in self.allowed_hostnames


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        allowed_origins: Sequence[str],
        bind_host: str | None = None,
        run_credential_ok: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.policy = AccessPolicy(allowed_origins, bind_host)
        #: Whether a bearer is the live credential of an agent run
        #: (:mod:`service.projects.grants`); it opens ``/mcp`` only.
        self.run_credential_ok = run_credential_ok

    def _run_credential(self, scope: Scope) -> bool:
        if self.run_credential_ok is None or scope["type"] != "http":
            return False
        if scope["path"] not in RUN_CREDENTIAL_PATHS:
            return False
        given = presented_token(scope)
        return given is not None and self.run_credential_ok(given)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if (
            self.token is not None
            and not token_ok(self.token, scope)
            and not self._run_credential(scope)
        ):
            await self._refuse(scope, send, 401, "missing or invalid token")
            return
        if not self.policy.origin_ok(scope):
            await self._refuse(scope, send, 403, "origin not allowed")
            return
        if not self.policy.host_ok(scope):
            await self._refuse(scope, send, 403, "host not allowed")
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, reason: str) -> None:
        client = scope.get("client")
        logger.warning(
            "refused %s %s: %s",
            scope["type"],
            scope["path"],
            reason,
            extra={
                "peer": f"{client[0]}:{client[1]}" if client else None,
                "status": status,
                "reason": reason,
                "decision": "refused",
                "origin": _header(scope, b"origin"),
            },
        )
        body = orjson.dumps({"error": reason})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
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


_QUERY_TOKEN = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(authorization:?\s*\S+\s+)\S+", re.IGNORECASE)


class TokenRedactor(logging.Filter):
    """Blanks the token out of every log line that passes through a handler.

    Uvicorn logs each WebSocket request path with its query (``?token=``) and
    websockets logs the request headers at DEBUG; neither may print the secret,
    nor a wrong token (often a near miss of the right one).
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message or "token=" in message.lower() or "uthorization" in message:
            redacted = message.replace(self.token, "[redacted]")
            redacted = _QUERY_TOKEN.sub(r"\1[redacted]", redacted)
            redacted = _AUTH_HEADER.sub(r"\1[redacted]", redacted)
            record.msg = redacted
            record.args = None
        return True
