"""The asyncio client of cc-executor: one class for the CLI, the tests and the
prompt tool.

>>> async with ExecutorClient("ws://127.0.0.1:8003/ws/mcp") as client:
...     run = await client.execute(argv=["seq", "1", "3"])
...     result = await run.wait()
...     print(result.stdout, result.status)

``ExecutorClient.from_env()`` takes the URL and token from ``CC_EXECUTOR_URL``
and ``CC_EXECUTOR_TOKEN`` (what the ``cc-executor`` subcommands use); any URL
form is accepted: ``ws://host:port/ws/mcp``, ``http://host:port`` or just
``host:port`` (see :func:`resolve_url`). The full guide is ``docs/client.md``.

One reader task receives every frame: responses resolve the future of their
request id; notifications that name an ``execution_id`` go to that
execution's queue (created on first sight, so nothing is lost between the
``execute`` response and the caller asking for events); the rest, and the
permission prompts ``agent.permission``/``agent.permission_resolved``, go to
:attr:`ExecutorClient.notifications`. Errors come back as the typed
:class:`~service.errors.RpcError` family, with the server's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl as ssl_module
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from service.protocol import error_from_wire

#: Notifications that ask for (or settle) an answer: they go to
#: ``notifications``, where whoever answers is listening, not to their execution.
PROMPTS = frozenset({"agent.permission", "agent.permission_resolved"})

DEFAULT_URL = "ws://127.0.0.1:8003/ws/mcp"
URL_ENV = "CC_EXECUTOR_URL"
TOKEN_ENV = "CC_EXECUTOR_TOKEN"
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class ExecutionError(Exception):
    """The server ended this execution's stream with ``process.error``."""

    def __init__(self, message: str, params: dict[str, Any]) -> None:
        super().__init__(message)
        self.params = params


class ConnectionLost(Exception):
    """The WebSocket closed while a request or an execution was pending."""


def resolve_url(text: str) -> str:
    """The WebSocket URL meant by ``text``.

    ``http``/``https`` become ``ws``/``wss``; a missing scheme means ``ws``; a
    missing path (or ``/``) means ``/ws/mcp``. ``ValueError`` for any other
    scheme or a URL without a host.
    """
    raw = text.strip()
    if "://" not in raw:
        raw = "ws://" + raw
    parts = urlsplit(raw)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {text!r} (use ws, wss, http)")
    if not parts.netloc:
        raise ValueError(f"no host in URL {text!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws/mcp"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


@dataclass
class ExecutionResult:
    """What an execution produced, as seen by this client."""

    execution_id: str
    status: str
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    completed: dict[str, Any]
    seqs: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return int(self.completed.get("dropped", 0))


class RemoteExecution:
    """A handle on one execution started or attached by this client.

    Named apart from the server's ``service.process.execution.Execution``: this
    one only holds a connection and the frames that arrived for the execution.
    """

    def __init__(self, client: ExecutorClient, execution_id: str, info: dict[str, Any]) -> None:
        self.client = client
        self.id = execution_id
        self.info = info
        self.pid: int | None = info.get("pid")
        self.pgid: int | None = info.get("pgid")

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every notification of this execution, ending with ``process.completed``
        (or ``process.error``, with which an attach ends when it cannot replay)."""
        queue = self.client._queue(self.id)
        while True:
            message = await queue.get()
            if message is None:
                raise ConnectionLost("connection closed before process.completed")
            yield message
            if message["method"] in ("process.completed", "process.error"):
                return

    async def wait(self, timeout: float | None = None) -> ExecutionResult:  # noqa: ASYNC109
        """Collect output until ``process.completed``."""
        return await asyncio.wait_for(self._collect(), timeout)

    async def _collect(self) -> ExecutionResult:
        out: list[str] = []
        err: list[str] = []
        seqs: list[int] = []
        events: list[dict[str, Any]] = []
        async for message in self.events():
            events.append(message)
            params = message["params"]
            if message["method"] == "process.output":
                (out if params["type"] == "stdout" else err).append(params["data"])
                seqs.append(params["seq"])
            elif message["method"] == "process.error":
                raise ExecutionError(params.get("error", "process.error"), params)
            elif message["method"] == "process.completed":
                return ExecutionResult(
                    self.id,
                    params["status"],
                    params.get("exit_code"),
                    params.get("signal"),
                    "".join(out),
                    "".join(err),
                    params,
                    seqs,
                    events,
                )
        raise ConnectionLost("no process.completed")

    async def control(self, kind: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "control", {"type": kind, "execution_id": self.id}
        )
        return result

    async def pause(self) -> dict[str, Any]:
        return await self.control("PAUSE")

    async def resume(self) -> dict[str, Any]:
        return await self.control("RESUME")

    async def cancel(self) -> dict[str, Any]:
        return await self.control("CANCEL")

    async def send_input(self, data: str, eof: bool = False) -> int:
        result = await self.client.call(
            "input", {"execution_id": self.id, "data": data, "eof": eof}
        )
        return int(result["written"])

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("status", {"execution_id": self.id})
        return result


class ExecutorClient:
    def __init__(
        self,
        url: str = "ws://127.0.0.1:8003/ws/mcp",
        token: str | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        open_timeout_s: float = 10.0,
        max_frame_bytes: int | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.ssl = ssl
        self.open_timeout_s = open_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self.session_id: str | None = None
        self.server_version: str | None = None
        self.capabilities: list[str] = []
        #: Notifications that name no execution (``connected``, ``project.state``...).
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._queues: defaultdict[str, asyncio.Queue[dict[str, Any] | None]] = defaultdict(
            asyncio.Queue
        )
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.closed = asyncio.Event()

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        token: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> ExecutorClient:
        """A client for ``url`` (else ``$CC_EXECUTOR_URL``, else the default
        local server) with ``token`` (else ``$CC_EXECUTOR_TOKEN``, else none).
        ``ValueError`` for a URL :func:`resolve_url` cannot read."""
        env = os.environ if environ is None else environ
        chosen = url or env.get(URL_ENV) or DEFAULT_URL
        return cls(resolve_url(chosen), token or env.get(TOKEN_ENV) or None, **options)

    async def __aenter__(self) -> ExecutorClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        tls: dict[str, Any] = {}
        if self.url.startswith("wss://"):
            # The system trust store (OpenSSL honours SSL_CERT_FILE and
            # SSL_CERT_DIR) unless the caller gave its own context.
            tls["ssl"] = self.ssl or ssl_module.create_default_context()
        self._ws = await websockets.connect(
            self.url,
            additional_headers=headers,
            **tls,
            open_timeout=self.open_timeout_s,
            max_size=self.max_frame_bytes,
            compression=None,
        )
        self._reader = asyncio.create_task(self._read_loop(), name="executor-client-reader")
        waiter = asyncio.create_task(self._connected.wait())
        await asyncio.wait(
            {waiter, self._reader}, timeout=self.open_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if not self._connected.is_set():
            waiter.cancel()
            await self.close()
            raise ConnectionLost("the server did not send 'connected'")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    @property
    def websocket(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def _read_loop(self) -> None:
        try:
            async for frame in self.websocket:
                message = orjson.loads(frame)
                for item in message if isinstance(message, list) else [message]:
                    self._route(item)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            lost = ConnectionLost("connection closed")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()
            for queue in self._queues.values():
                queue.put_nowait(None)

    def _route(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            future = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if future is None or future.done():
                if message.get("id") is None and "error" in message:
                    self.notifications.put_nowait(message)
                return
            if "error" in message:
                future.set_exception(error_from_wire(message["error"]))
            else:
                future.set_result(message.get("result"))
            return
        params = message.get("params") or {}
        if message["method"] == "connected":
            self.session_id = params.get("session_id")
            self.server_version = params.get("version")
            self.capabilities = list(params.get("capabilities", []))
            self._connected.set()
            return
        execution_id = params.get("execution_id")
        if message["method"] in PROMPTS:
            self.notifications.put_nowait(message)
        elif execution_id is not None and message["method"].startswith(("process.", "agent.")):
            self._queues[execution_id].put_nowait(message)
        else:
            self.notifications.put_nowait(message)

    def _queue(self, execution_id: str) -> asyncio.Queue[dict[str, Any] | None]:
        fresh = execution_id not in self._queues
        queue = self._queues[execution_id]
        if fresh and self.closed.is_set():
            queue.put_nowait(None)  # the reader is gone: nothing will ever arrive
        return queue

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = 30.0,  # noqa: ASYNC109
    ) -> Any:
        """Send a request and return its result; raises the server's RpcError."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        if self.closed.is_set():
            self._pending.pop(request_id, None)
            raise ConnectionLost("connection closed")
        try:
            await self.websocket.send(orjson.dumps(message).decode())
        except websockets.ConnectionClosed:
            self._pending.pop(request_id, None)
            raise ConnectionLost("connection closed") from None
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def execute(
        self,
        command: str | None = None,
        *,
        argv: Sequence[str] | None = None,
        **options: Any,
    ) -> RemoteExecution:
        params: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if command is not None:
            params["command"] = command
        if argv is not None:
            params["argv"] = list(argv)
        result = await self.call("execute", params)
        return RemoteExecution(self, result["execution_id"], result)

    async def attach(self, execution_id: str, since_seq: int = 0) -> RemoteExecution:
        result = await self.call("attach", {"execution_id": execution_id, "since_seq": since_seq})
        return RemoteExecution(self, execution_id, result)

    async def run(self, command: str | None = None, **options: Any) -> ExecutionResult:
        """Execute and wait for the result."""
        timeout = options.pop("wait_timeout", None)
        execution = await self.execute(command, **options)
        return await execution.wait(timeout)
