"""Method routing and the one place where errors become JSON-RPC errors.

A :class:`Router` maps method names to a pydantic params model and an async
handler. :meth:`Router.call` validates the params, runs the handler and turns
whatever it raises into an error response: an :class:`~service.errors.RpcError`
keeps its code; a :class:`~service.store.StoreError` (a damaged page, a closed
store) becomes -32007 ``STORE_ERROR``; anything else is logged once with its
traceback and becomes -32603. Cancellation is never swallowed.

Integers: every params model bounds its own integer fields, and behind them
:func:`check_integers` refuses any integer of validated params outside
``±MAX_SAFE_INTEGER`` with -32602, so no number can reach SQLite (64-bit) or
the JSON encoder (64-bit) and fail there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from service.errors import (
    InternalError,
    InvalidParams,
    MethodNotFound,
    RpcError,
    StoreUnavailable,
)
from service.protocol import Frame, Request, error_response, result_response
from service.store.database import StoreError

if TYPE_CHECKING:
    from service.services import Services

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=BaseModel)

#: The largest integer a params field may hold: JavaScript's
#: Number.MAX_SAFE_INTEGER, so every client reads back what it sent, well
#: inside SQLite's and the encoder's 64 bits.
MAX_SAFE_INTEGER = 2**53 - 1
Handler = Callable[["CallContext", Any], Awaitable[Any]]


class Peer(Protocol):
    """Who a request came from, as handlers see it: a WebSocket
    :class:`~service.server.connection.Connection` or an in-process
    :class:`~service.server.local_connection.LocalConnection` (the MCP tools).

    A peer is the :class:`~service.process.sinks.Sink` its executions'
    notifications go to, and hashable so that it can own executions."""

    id: str
    #: ``host:port`` of the client (for log lines).
    peer: str
    peer_host: str
    #: The server's parts, for handlers.
    services: Services

    def __hash__(self) -> int: ...

    def offer(self, frame: Frame, *, droppable: bool) -> bool:
        """Queue ``frame`` without waiting; False when it was not queued."""

    async def put(self, frame: Frame) -> None:
        """Queue ``frame``, waiting for room (replays); OutboxClosed once gone."""

    @property
    def closed(self) -> bool: ...

    def notify(self, method: str, params: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler may use: the peer that asked (and through it the
    server's :class:`~service.services.Services`) and the request."""

    connection: Peer
    request: Request


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params_model: type[BaseModel]
    handler: Handler


def describe_validation_error(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """A one-line message naming each bad field, and the details as JSON-safe data."""
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = []
    for error in details:
        where = ".".join(str(part) for part in error["loc"]) or "params"
        parts.append(f"{where}: {error['msg']}")
    return "invalid params: " + "; ".join(parts), [
        {"loc": [str(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in details
    ]


def _integers(value: Any, where: str) -> list[tuple[str, int]]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [(where, value)]
    if isinstance(value, BaseModel):
        return [
            found
            for name in type(value).model_fields
            for found in _integers(getattr(value, name), f"{where}.{name}" if where else name)
        ]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _integers(v, f"{where}.{k}")]
    if isinstance(value, list | tuple):
        return [found for i, v in enumerate(value) for found in _integers(v, f"{where}.{i}")]
    return []


def check_integers(params: BaseModel) -> None:
    """InvalidParams naming the first integer of ``params`` out of
    ``±MAX_SAFE_INTEGER`` (strings are not walked: they stay strings)."""
    for where, value in _integers(params, ""):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise InvalidParams(
                f"invalid params: {where}: integer out of range (|n| <= {MAX_SAFE_INTEGER})",
                [{"loc": where.split("."), "msg": "integer out of range", "type": "int_range"}],
            )


class Router:
    """The table of methods a connection serves."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        #: Told of every answered request (method, error code or None); set by
        #: the composition root to feed the metrics.
        self.on_answer: Callable[[str, int | None], None] | None = None

    def method(self, name: str, params_model: type[P]) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler(ctx, params)`` for ``name``."""

        def register(handler: Handler) -> Handler:
            if name in self._methods:
                raise ValueError(f"method {name!r} registered twice")
            self._methods[name] = Method(name, params_model, handler)
            return handler

        return register

    def include(self, other: Router) -> None:
        for method in other._methods.values():
            if method.name in self._methods:
                raise ValueError(f"method {method.name!r} registered twice")
            self._methods[method.name] = method

    @property
    def names(self) -> list[str]:
        return sorted(self._methods)

    def validate(self, request: Request) -> tuple[Method, BaseModel]:
        method = self._methods.get(request.method)
        if method is None:
            raise MethodNotFound(f"unknown method: {request.method}", {"method": request.method})
        if isinstance(request.params, list):
            raise InvalidParams("params must be an object (by-name parameters)")
        try:
            params = method.params_model.model_validate(request.params or {})
        except ValidationError as exc:
            message, details = describe_validation_error(exc)
            raise InvalidParams(message, details) from None
        check_integers(params)
        return method, params

    async def call(self, ctx: CallContext) -> dict[str, Any] | None:
        """Run one request; its response, or None for a notification.

        ``on_answer(method, code)`` (the metrics) hears of every request
        handled here, notifications included: ``code`` is None on success.
        """
        response = await self._respond(ctx)
        if self.on_answer is not None:
            error = response.get("error")
            self.on_answer(ctx.request.method, error["code"] if error else None)
        return None if ctx.request.is_notification else response

    async def _respond(self, ctx: CallContext) -> dict[str, Any]:
        request = ctx.request
        try:
            method, params = self.validate(request)
        except RpcError as exc:
            # Handlers log their own refusals; a request refused before its handler
            # runs (unknown method, bad params) gets its audit line here.
            logger.info(
                "%s refused: %s",
                request.method,
                exc.message,
                extra={
                    "connection_id": getattr(ctx.connection, "id", None),
                    "peer": getattr(ctx.connection, "peer", None),
                    "request_id": request.id,
                    "method": request.method,
                    "code": exc.code,
                    "decision": "refused",
                },
            )
            return error_response(request.id, exc)
        try:
            result = await method.handler(ctx, params)
        except RpcError as exc:
            return error_response(request.id, exc)
        except StoreError as exc:
            logger.warning(
                "%s: store error: %s",
                request.method,
                exc,
                extra={"request_id": request.id, "method": request.method},
            )
            return error_response(request.id, StoreUnavailable(f"store error: {exc}"))
        except Exception:
            logger.exception(
                "internal error in %s",
                request.method,
                extra={"request_id": request.id, "method": request.method},
            )
            return error_response(request.id, InternalError("internal error"))
        return result_response(request.id, result)
