"""Requests and replies between nodes, over the bus.

A request is a small JSON notification on the target node's channel
(:func:`~service.cluster.identity.node_channel`): ``{"t": "req", "id", "from",
"op", "args"}``; the target runs it (:mod:`service.cluster.ops`) and notifies
the reply on the asker's channel: ``{"t": "rep", "id", "result"}`` or
``{"t": "rep", "id", "error": {code, message, data}}``, the JSON-RPC error
object of the typed error it raised, which the asker raises again as the same
typed error (:func:`~service.protocol.error_from_wire`). So a forwarded
``control`` answers exactly what the node that runs the execution answered,
with the effect checked there.

Payloads stay under PostgreSQL's 8000-byte limit (:data:`MAX_PAYLOAD_BYTES`);
a request that would not fit is refused before it is sent (-32602). An
answer that does not come within ``cluster_request_timeout_s`` is -32004
``NODE_TIMEOUT``; the request carries its deadline (wall clock), and a node
that receives it too late (it was stalled) drops it rather than act on it after
its asker gave up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from service.cluster.identity import node_channel
from service.errors import InternalError, InvalidParams, RpcError, TimedOut
from service.protocol import error_from_wire

logger = logging.getLogger(__name__)

#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900

Send = Callable[[str, str], Awaitable[None]]
Handler = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]
Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


class Rpc:
    """This node's side of the requests: asking others, answering them."""

    def __init__(
        self, me: str, send: Send, handler: Handler, spawn: Spawn, timeout_s: float
    ) -> None:
        self.me = me
        self.send = send
        self.handler = handler
        self.spawn = spawn
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.served = 0

    async def call(self, node_id: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """``op`` run on ``node_id``: its result, or the typed error it raised."""
        request_id = uuid.uuid4().hex
        payload = json.dumps(
            {
                "t": "req",
                "id": request_id,
                "from": self.me,
                "op": op,
                "args": args,
                "deadline": time.time() + self.timeout_s,
            },
            separators=(",", ":"),
        )
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            raise InvalidParams(
                f"{op} for another node is limited to {MAX_PAYLOAD_BYTES} bytes of JSON "
                f"({len(payload.encode())} given): send it in smaller pieces",
                {"node": node_id},
            )
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send(node_channel(node_id), payload)
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise TimedOut(
                f"node {node_id} did not answer {op} within {self.timeout_s:g} s",
                {"node": node_id},
                name="NODE_TIMEOUT",
            ) from None
        finally:
            self._pending.pop(request_id, None)

    def on_message(self, payload: str) -> None:
        """A notification on this node's channel (on the event loop)."""
        try:
            message = json.loads(payload)
            kind, request_id = message["t"], str(message["id"])
        except (ValueError, KeyError, TypeError):
            logger.warning(
                "bus: unreadable message on this node's channel", extra={"payload": payload[:200]}
            )
            return
        if kind == "rep":
            future = self._pending.get(request_id)
            if future is None or future.done():
                return  # timed out meanwhile: the asker already answered its client
            if "error" in message:
                future.set_exception(error_from_wire(message["error"]))
            else:
                future.set_result(message.get("result") or {})
        elif kind == "req":
            self.spawn(self._serve(message), f"cluster:serve:{message.get('op')}")

    async def _serve(self, message: dict[str, Any]) -> None:
        asker, op, request_id = str(message.get("from")), str(message.get("op")), message["id"]
        reply: dict[str, Any] = {"t": "rep", "id": request_id}
        try:
            deadline = message.get("deadline")
            if isinstance(deadline, int | float) and time.time() > deadline:
                # The asker already answered its client with NODE_TIMEOUT (this
                # node was stalled): doing it now would surprise everyone.
                logger.warning("dropped a request that came too late", extra={"op": op})
                return
            args = message.get("args")
            reply["result"] = await self.handler(asker, op, args if isinstance(args, dict) else {})
        except RpcError as exc:
            reply["error"] = exc.to_error()
        except Exception:
            logger.exception("cluster request failed", extra={"op": op, "from_node": asker})
            reply["error"] = InternalError(f"{op} failed on node {self.me}").to_error()
        self.served += 1
        text = json.dumps(reply, separators=(",", ":"), default=str)
        if len(text.encode()) > MAX_PAYLOAD_BYTES:
            text = json.dumps(
                {"t": "rep", "id": request_id, "error": InternalError("reply too large").to_error()}
            )
        await self.send(node_channel(asker), text)
