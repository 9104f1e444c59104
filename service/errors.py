"""Typed errors that carry their JSON-RPC code and symbolic name.

Handlers raise these; the router in :mod:`service.dispatch` turns them
into error responses at exactly one place. Anything else raised by a handler
becomes ``-32603`` with one ``logger.exception`` line.

Every error object on the wire carries a stable symbolic name in
``data.error`` beside its numeric code (docs/protocol.md, "Error names").
A class's ``name`` is its default; a raise site with a more precise cause
passes ``name=`` (or ``data={"error": NAME}``, or uses a subclass such as
:class:`ProjectNotFound`).
A class that sets neither gets the name of its code from
:data:`CODE_NAMES`, so a new code needs one line there. Every name any
raise site uses must be listed in :data:`NAMES`: a test checks that each
one is documented.
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

#: The default symbolic name of each code.
CODE_NAMES: dict[int, str] = {
    PARSE_ERROR: "PARSE_ERROR",
    INVALID_REQUEST: "INVALID_REQUEST",
    METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    INVALID_PARAMS: "INVALID_PARAMS",
    INTERNAL_ERROR: "INTERNAL_ERROR",
    LIMIT_REACHED: "LIMIT_REACHED",
    NOT_ALLOWED: "SECURITY_DENIED",
    NOT_FOUND: "EXECUTION_NOT_FOUND",
    TIMED_OUT: "TIMED_OUT",
    INVALID_STATE: "INVALID_STATE",
    RATE_LIMITED: "RATE_LIMITED",
    STORE_ERROR: "STORE_ERROR",
}

#: Every symbolic name a client can see, with its code (docs/protocol.md lists them all).
NAMES: dict[str, int] = {
    **{name: code for code, name in CODE_NAMES.items()},
    "INVALID_PATH": INVALID_PARAMS,
    "EXEC_FAILED": INVALID_PARAMS,
    "PROJECT_NOT_FOUND": NOT_FOUND,
    "PAUSE_TIMEOUT": TIMED_OUT,
    # The cluster (service/cluster): another node is down, silent, or refuses.
    "NODE_DOWN": INVALID_STATE,
    "NODE_TIMEOUT": TIMED_OUT,
    "NODE_NOT_ALLOWED": INVALID_PARAMS,
    "NODE_UNAVAILABLE": INVALID_PARAMS,
    "ENCODING_FAILED": INTERNAL_ERROR,
}


class RpcError(Exception):
    """An error that the client receives as a JSON-RPC error object."""

    code: int = INTERNAL_ERROR
    #: None: the name of the code (:data:`CODE_NAMES`).
    name: str | None = None

    def __init__(
        self,
        message: str,
        data: Any = None,
        *,
        code: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code
        if name is not None:
            self.name = name

    @property
    def error_name(self) -> str:
        """The symbolic name sent as ``data.error``."""
        if self.name:
            return self.name
        given = self.data.get("error") if isinstance(self.data, dict) else None
        return given if isinstance(given, str) else CODE_NAMES.get(self.code, "INTERNAL_ERROR")

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC error object; ``data`` is always an object with ``error``.

        ``data`` given as an object gains the ``error`` key; any other value
        (a list of validation errors, say) moves under ``data.details``.
        """
        data: dict[str, Any]
        if isinstance(self.data, dict):
            data = {**self.data, "error": self.error_name}
        elif self.data is None:
            data = {"error": self.error_name}
        else:
            data = {"error": self.error_name, "details": self.data}
        return {"code": self.code, "message": self.message, "data": data}


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
    """A policy refusal: the allow-list, shell, an ``LD_*`` variable."""

    code = NOT_ALLOWED


class NotFound(RpcError):
    code = NOT_FOUND
    name = "EXECUTION_NOT_FOUND"


class ProjectNotFound(NotFound):
    name = "PROJECT_NOT_FOUND"


class InvalidPath(InvalidParams):
    """A path parameter (``cwd``, a project path) that cannot be used."""

    name = "INVALID_PATH"


class TimedOut(RpcError):
    code = TIMED_OUT


class PauseTimeout(TimedOut):
    name = "PAUSE_TIMEOUT"


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
