"""JSON-RPC 2.0 messages: parse, validate and build. No I/O here.

A text frame holds one message or a batch (a JSON array). :func:`parse_frame`
turns it into :class:`Request` objects and ready-made error responses for the
parts that are not valid requests, following the JSON-RPC 2.0 specification:
unparseable JSON gets -32700 with ``id`` null, an empty batch or a non-object
member gets -32600, and notifications (no ``id``) never get a response.

A number ``id`` comes back exactly as the client wrote it: a client matches
responses by id, and ``1.10``, ``-0`` or an integer past 64 bits would not
survive a round trip through a double (:class:`NumberId`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from service.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    InternalError,
    InvalidParams,
    InvalidRequest,
    InvalidState,
    LimitReached,
    MethodNotFound,
    NotAllowed,
    NotFound,
    ParseError,
    RateLimited,
    RpcError,
    TimedOut,
)

logger = logging.getLogger(__name__)

JSONRPC = "2.0"


class NumberId:
    """A JSON number ``id`` kept as the text the client sent, re-emitted verbatim."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumberId) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"NumberId({self.text!r})"


RequestId = str | int | float | NumberId | None


@dataclass(frozen=True, slots=True)
class Request:
    """A valid JSON-RPC request or notification."""

    method: str
    params: Any
    id: RequestId
    is_notification: bool


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one frame held: the requests to run and the errors already known.

    ``items`` keeps the frame's order; each is a :class:`Request` or an error
    response (a dict). ``batch`` says whether responses go back as an array.
    """

    items: list[Request | dict[str, Any]]
    batch: bool


def _default(value: Any) -> Any:
    if isinstance(value, NumberId):
        return orjson.Fragment(value.text)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode(message: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Serialise one message (or a batch) for one text frame. Raises TypeError
    (orjson.JSONEncodeError) for what JSON cannot hold, such as an integer past
    64 bits; replies go through :func:`encode_reply`, which never raises."""
    return orjson.dumps(message, default=_default).decode()


def encode_reply(reply: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Serialise a response (or a batch of them); a response that cannot be
    encoded is replaced by a -32603 error with the same id, so one bad result
    never costs the connection nor the other responses of a batch."""
    try:
        return encode(reply)
    except TypeError:
        pass
    members = reply if isinstance(reply, list) else [reply]
    fixed = []
    for member in members:
        try:
            encode(member)
        except TypeError as exc:
            logger.error(
                "response could not be encoded: %s",
                exc,
                extra={"request_id": str(member.get("id"))},
            )
            error = RpcError(
                "internal error: the response could not be encoded",
                {"error": "ENCODING_FAILED"},
                code=INTERNAL_ERROR,
            )
            member = error_response(member.get("id"), error)
        fixed.append(member)
    return encode(fixed if isinstance(reply, list) else fixed[0])


def result_response(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": request_id, "result": result}


def error_response(request_id: RequestId, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": request_id, "error": error.to_error()}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "method": method, "params": params}


def _valid_id(value: Any) -> bool:
    return value is None or (
        isinstance(value, str | int | float | NumberId) and not isinstance(value, bool)
    )


def _lossy_id(message: Any) -> bool:
    """Whether ``message``'s id is a number that a double may not give back as sent:
    any float, and 0 (which may have been written ``-0``)."""
    if not isinstance(message, dict):
        return False
    value = message.get("id")
    return isinstance(value, float) or (type(value) is int and value == 0)


def _raw_ids(text: str | bytes, decoded: Any) -> Any:
    """``decoded`` with each number id replaced by its :class:`NumberId` text.

    Only for the rare frame with a float id: the standard library parser,
    told to keep number text, reads the frame once more."""
    try:
        raw = json.loads(text, parse_float=NumberId, parse_int=NumberId)
    except (ValueError, RecursionError):
        return decoded
    pairs = zip(decoded, raw, strict=False) if isinstance(decoded, list) else [(decoded, raw)]
    for message, original in pairs:
        if _lossy_id(message) and isinstance(original, dict):
            found = original.get("id")
            if isinstance(found, NumberId):
                message["id"] = found
    return decoded


def parse_message(message: Any) -> Request | dict[str, Any]:
    """Validate one decoded message; an error response when it is not a request."""
    if not isinstance(message, dict):
        return error_response(None, RpcError("request must be a JSON object", code=INVALID_REQUEST))
    request_id = message.get("id")
    if not _valid_id(request_id):
        return error_response(
            None, RpcError("id must be a string, a number or null", code=INVALID_REQUEST)
        )
    if message.get("jsonrpc") != JSONRPC:
        return error_response(request_id, RpcError('jsonrpc must be "2.0"', code=INVALID_REQUEST))
    method = message.get("method")
    if not isinstance(method, str) or not method:
        return error_response(
            request_id, RpcError("method must be a non-empty string", code=INVALID_REQUEST)
        )
    params = message.get("params")
    if "params" in message and not isinstance(params, dict | list):
        return error_response(
            request_id, RpcError("params must be an object or an array", code=INVALID_REQUEST)
        )
    extra = set(message) - {"jsonrpc", "id", "method", "params"}
    if extra:
        return error_response(
            request_id,
            RpcError(f"unknown member(s): {', '.join(sorted(extra))}", code=INVALID_REQUEST),
        )
    return Request(method, params, request_id, is_notification="id" not in message)


def parse_frame(text: str | bytes) -> Parsed:
    """Decode one frame into requests and error responses."""
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        error = RpcError(f"parse error: {exc}", code=PARSE_ERROR)
        return Parsed([error_response(None, error)], False)
    members = decoded if isinstance(decoded, list) else [decoded]
    if any(_lossy_id(member) for member in members):
        decoded = _raw_ids(text, decoded)
    if isinstance(decoded, list):
        if not decoded:
            error = RpcError("empty batch", code=INVALID_REQUEST)
            return Parsed([error_response(None, error)], False)
        return Parsed([parse_message(member) for member in decoded], True)
    return Parsed([parse_message(decoded)], False)


#: The typed error for each code the server sends (any other code: RpcError).
ERRORS_BY_CODE: dict[int, type[RpcError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        LimitReached,
        NotAllowed,
        NotFound,
        TimedOut,
        InvalidState,
        RateLimited,
    )
}


def error_from_wire(error: dict[str, Any]) -> RpcError:
    """The typed error of a response's ``error`` member, keeping its code, its
    data and the symbolic name in ``data.error``."""
    code = int(error.get("code", INTERNAL_ERROR))
    cls = ERRORS_BY_CODE.get(code, RpcError)
    data = error.get("data")
    name = data.get("error") if isinstance(data, dict) else None
    return cls(
        str(error.get("message", "")),
        data,
        code=code,
        name=name if isinstance(name, str) else None,
    )


# --- notifications about executions ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One notification, built once: what it says and its encoded text.

    Sockets send :attr:`text`; readers in the server process (attach's holder,
    the MCP tools) read :attr:`method`, :attr:`params` and :attr:`seq`, so
    nothing sniffs or parses the text again. Its length is the text's (what
    an outbox counts against its budget)."""

    method: str
    params: dict[str, Any]
    text: str

    def __len__(self) -> int:
        return len(self.text)

    @property
    def seq(self) -> int | None:
        """The seq of a ``process.output`` chunk; None for any other frame."""
        if self.method != "process.output":
            return None
        seq: int = self.params["seq"]
        return seq


def frame(method: str, params: dict[str, Any]) -> Frame:
    """The notification ``method`` with ``params``, as a :class:`Frame`."""
    return Frame(method, params, encode(notification(method, params)))


def process_output(execution_id: str, stream: str, data: str, seq: int, truncated: bool) -> Frame:
    """``process.output``: one line (or piece of a line) of ``stream``."""
    params: dict[str, Any] = {
        "execution_id": execution_id,
        "type": stream,
        "data": data,
        "seq": seq,
    }
    if truncated:
        params["truncated"] = True
    return frame("process.output", params)


def process_completed(
    execution_id: str,
    status: str,
    *,
    exit_code: int | None,
    signal: int | None,
    duration_s: float | None,
    stdout_bytes: int,
    stderr_bytes: int,
    dropped: int,
    reason: str | None = None,
) -> Frame:
    """``process.completed``: the last frame of an execution. ``reason`` only
    for an execution ``lost`` with an earlier server process."""
    params: dict[str, Any] = {
        "execution_id": execution_id,
        "status": status,
        "exit_code": exit_code,
        "signal": signal,
        "duration_s": duration_s,
        "stdout_bytes": stdout_bytes,
        "stderr_bytes": stderr_bytes,
        "dropped": dropped,
    }
    if reason is not None:
        params["reason"] = reason
    return frame("process.completed", params)


def process_started(execution_id: str, pid: int | None, pgid: int | None) -> Frame:
    return frame("process.started", {"execution_id": execution_id, "pid": pid, "pgid": pgid})


def process_paused(execution_id: str) -> Frame:
    return frame("process.paused", {"execution_id": execution_id})


def process_resumed(execution_id: str) -> Frame:
    return frame("process.resumed", {"execution_id": execution_id})


def process_cancelled(execution_id: str) -> Frame:
    return frame("process.cancelled", {"execution_id": execution_id})


def process_error(execution_id: str, error: str, error_name: str) -> Frame:
    """``process.error``: an attach that cannot go on (the store failed, the
    execution is not live here) ends with this instead of ``process.completed``."""
    return frame(
        "process.error",
        {"execution_id": execution_id, "error": error, "error_name": error_name},
    )


def attached(
    execution_id: str,
    state: str,
    pid: int | None,
    pgid: int | None,
    since_seq: int,
    last_seq: int,
    *,
    replay: bool,
    node: str | None = None,
) -> dict[str, Any]:
    """The result of ``attach``; ``node`` only when another node runs it."""
    result: dict[str, Any] = {
        "status": "attached",
        "execution_id": execution_id,
        "state": state,
        "pid": pid,
        "pgid": pgid,
        "since_seq": since_seq,
        "last_seq": last_seq,
        "replay": replay,
    }
    if node is not None:
        result["node"] = node
    return result
