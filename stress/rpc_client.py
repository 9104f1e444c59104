"""A synchronous JSON-RPC client over one WebSocket that cooperates with gevent.

It wraps ``websocket-client``'s blocking socket. Locust monkey-patches the
standard library before the locustfile is imported, so a blocking ``recv`` only
parks the calling greenlet: one reader greenlet per client receives every
frame and hands responses to the caller waiting on that request id and
notifications to a queue per execution. Nothing here reports to Locust; the
user (:mod:`stress.rpc_user`) measures and reports each call.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import orjson
import websocket
from gevent.event import AsyncResult
from gevent.queue import Empty, Queue


class RpcCallError(Exception):
    """The server answered a request with a JSON-RPC error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.method = method
        self.code = int(error.get("code", 0))
        self.error_message = str(error.get("message", ""))
        self.data = error.get("data")
        super().__init__(f"{method}: {self.code} {self.error_message}")


class ConnectionLost(Exception):
    """The WebSocket closed while a call or a wait was in progress."""


@dataclass
class Reply:
    """A response, with the size of the frame that carried it."""

    message: dict[str, Any]
    size: int


@dataclass
class Session:
    """What the server said in its ``connected`` notification."""

    session_id: str
    version: str
    capabilities: list[str] = field(default_factory=list)


_CLOSED = object()


class RpcClient:
    """One WebSocket connection speaking JSON-RPC 2.0.

    :meth:`call` sends a request and blocks the calling greenlet (only) until
    its response arrives. Notifications that carry an ``execution_id`` are
    queued per execution (:meth:`next_event`); the others go to
    :attr:`other_events`. After the socket closes every waiter gets
    :class:`ConnectionLost`. Not safe for two greenlets waiting on the same
    execution's queue.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.timeout_s = timeout_s
        self.session: Session | None = None
        self.other_events: Queue[Any] = Queue()
        self._ids = itertools.count(1)
        self._pending: dict[int, AsyncResult] = {}
        #: Requests whose caller stopped waiting (killed at the run's end, or
        #: timed out) before the reply came; see :meth:`settle`.
        self._abandoned: set[int] = set()
        self._abandoned_executions: list[str] = []
        self._queues: dict[str, Queue[Any]] = {}
        self._ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._closed = False

    # --- life -----------------------------------------------------------------

    def connect(self) -> Session:
        """Open the socket and wait for ``connected``; its session and capabilities."""
        header = [f"Authorization: Bearer {self.token}"] if self.token else None
        # enable_multithread: sends take a lock (a gevent lock once patched), so
        # the reader's automatic pong never interleaves with a user's frame.
        self._ws = websocket.create_connection(
            self.url, header=header, timeout=self.timeout_s, enable_multithread=True
        )
        self._ws.settimeout(None)  # the reader blocks its own greenlet only
        self._reader = gevent.spawn(self._read_loop)
        deadline = time.monotonic() + self.timeout_s
        while self.session is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no 'connected' notification from the server")
            try:
                message = self.other_events.get(timeout=remaining)
            except Empty:
                continue
            if message is _CLOSED:
                raise ConnectionLost("closed before 'connected'")
            if message.get("method") == "connected":
                params = message.get("params") or {}
                self.session = Session(
                    session_id=str(params.get("session_id", "")),
                    version=str(params.get("version", "")),
                    capabilities=list(params.get("capabilities") or []),
                )
        return self.session

    def close(self) -> None:
        """Close the socket and stop the reader; safe to call twice."""
        self._closed = True
        if self._ws is not None:
            try:
                self._ws.close(timeout=1)
            except (OSError, websocket.WebSocketException):
                pass
        if self._reader is not None:
            self._reader.kill(block=True, timeout=2)
            self._reader = None
        self._fail_waiters()

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake (a crashed client)."""
        self._closed = True
        if self._ws is not None and self._ws.sock is not None:
            try:
                self._ws.sock.shutdown(2)
            except OSError:
                pass
        self.close()

    @property
    def connected(self) -> bool:
        return not self._closed and self._ws is not None and self._ws.connected

    # --- calls ----------------------------------------------------------------

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> Reply:
        """Send one request and wait for its response (result or error).

        Raises :class:`RpcCallError` for an error response, :class:`ConnectionLost`
        when the socket closes first, :class:`TimeoutError` when no response comes.
        """
        if self._ws is None or self._closed:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        waiter = AsyncResult()
        self._pending[request_id] = waiter
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            self._ws.send(orjson.dumps(message).decode())
            reply = waiter.get(timeout=timeout_s or self.timeout_s)
        except gevent.Timeout:
            raise TimeoutError(f"{method}: no response in {timeout_s or self.timeout_s}s") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionLost(f"{method}: {exc}") from None
        finally:
            self._pending.pop(request_id, None)
            if not waiter.ready():
                self._abandoned.add(request_id)
        if reply is _CLOSED:
            raise ConnectionLost(f"{method}: connection closed")
        if "error" in reply.message:
            raise RpcCallError(method, reply.message["error"])
        assert isinstance(reply, Reply)
        return reply

    def settle(self, timeout_s: float) -> list[str]:
        """Wait up to ``timeout_s`` for the replies nobody waits for any more;
        the executions they started. A user stopped while its ``execute`` was
        in flight does not know the execution it started: this does."""
        deadline = time.monotonic() + timeout_s
        while self._abandoned and not self._closed and time.monotonic() < deadline:
            gevent.sleep(0.02)
        started, self._abandoned_executions = self._abandoned_executions, []
        return started

    def next_event(self, execution_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The next notification of ``execution_id``; None after ``timeout_s``."""
        try:
            message = self.queue(execution_id).get(timeout=max(0.0, timeout_s))
        except Empty:
            return None
        if message is _CLOSED:
            raise ConnectionLost("connection closed")
        assert isinstance(message, dict)
        return message

    def queue(self, execution_id: str) -> Queue[Any]:
        queue = self._queues.get(execution_id)
        if queue is None:
            queue = self._queues[execution_id] = Queue()
        return queue

    def forget(self, execution_id: str) -> None:
        """Drop the queue of a finished execution."""
        self._queues.pop(execution_id, None)

    # --- reader ---------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            while True:
                frame = self._ws.recv()
                if not frame:
                    break
                size = len(frame)
                decoded = orjson.loads(frame)
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    if isinstance(message, dict):
                        self._route(message, size)
        except (OSError, websocket.WebSocketException, orjson.JSONDecodeError):
            pass
        finally:
            self._closed = True
            self._fail_waiters()

    def _route(self, message: dict[str, Any], size: int) -> None:
        if "method" not in message:
            request_id = message.get("id")
            waiter = self._pending.get(request_id)  # type: ignore[arg-type]
            if waiter is not None:
                waiter.set(Reply(message, size))
            elif request_id in self._abandoned:
                self._abandoned.discard(request_id)  # type: ignore[arg-type]
                result = message.get("result")
                if isinstance(result, dict) and isinstance(result.get("execution_id"), str):
                    self._abandoned_executions.append(result["execution_id"])
            return
        params = message.get("params")
        execution_id = params.get("execution_id") if isinstance(params, dict) else None
        if isinstance(execution_id, str):
            self.queue(execution_id).put(message)
        else:
            self.other_events.put(message)

    def _fail_waiters(self) -> None:
        for waiter in list(self._pending.values()):
            if not waiter.ready():
                waiter.set(_CLOSED)
        for queue in [*self._queues.values(), self.other_events]:
            queue.put(_CLOSED)
