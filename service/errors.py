"""Typed errors that carry their JSON-RPC code.

Handlers raise these; the router in :mod:`service.dispatch` turns them
into error responses at exactly one place. Anything else raised by a handler
becomes ``-32603`` with one ``logger.exception`` line.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
LIMIT_REACHED = -32001
NOT_ALLOWED = -32002
NOT_FOUND = -32003
TIMED_OUT = -32004
INVALID_STATE = -32005
RATE_LIMITED = -32006
STORE_ERROR = -32007


class RpcError(Exception):
    """An error that the client receives as a JSON-RPC error object."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RpcError):
    code = PARSE_ERROR


class InvalidRequest(RpcError):
    code = INVALID_REQUEST


class MethodNotFound(RpcError):
    code = METHOD_NOT_FOUND


class InvalidParams(RpcError):
    code = INVALID_PARAMS


class InternalError(RpcError):
    code = INTERNAL_ERROR


class LimitReached(RpcError):
    code = LIMIT_REACHED


class NotAllowed(RpcError):
    code = NOT_ALLOWED


class NotFound(RpcError):
    code = NOT_FOUND


class TimedOut(RpcError):
    code = TIMED_OUT


class InvalidState(RpcError):
    code = INVALID_STATE


class RateLimited(RpcError):
    code = RATE_LIMITED


class StoreUnavailable(RpcError):
    """The data asked for is in the store, which cannot give it: a damaged page,
    an I/O error. Never -32603 for that: the request was fine."""

    code = STORE_ERROR

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message, {"error": "STORE_ERROR", **(data or {})})
