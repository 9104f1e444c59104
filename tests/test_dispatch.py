"""The one boundary where handler errors become JSON-RPC errors."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from service.dispatch import CallContext, Router
from service.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    NotFound,
)
from service.protocol import Request


class Echo(BaseModel):
    value: int


def make_router() -> Router:
    router = Router()

    @router.method("echo", Echo)
    async def echo(ctx: CallContext, params: Echo) -> dict[str, Any]:
        return {"value": params.value}

    @router.method("boom", Echo)
    async def boom(ctx: CallContext, params: Echo) -> None:
        raise RuntimeError("a bug")

    @router.method("missing", Echo)
    async def missing(ctx: CallContext, params: Echo) -> None:
        raise NotFound("no such thing", {"what": params.value})

    return router


def call(method: str, params: Any, request_id: Any = 1) -> Any:
    request = Request(method, params, request_id, request_id is None)
    ctx = CallContext(connection=None, request=request)  # type: ignore[arg-type]
    return asyncio.run(make_router().call(ctx))


def test_result() -> None:
    assert call("echo", {"value": 3}) == {"jsonrpc": "2.0", "id": 1, "result": {"value": 3}}


def test_unknown_method() -> None:
    assert call("nope", {})["error"]["code"] == METHOD_NOT_FOUND


def test_invalid_params_name_the_field() -> None:
    error = call("echo", {"value": "x"})["error"]
    assert error["code"] == INVALID_PARAMS
    assert "value" in error["message"]
    assert error["data"]["error"] == "INVALID_PARAMS"
    assert error["data"]["details"][0]["loc"] == ["value"]


def test_positional_params_refused() -> None:
    assert call("echo", [1])["error"]["code"] == INVALID_PARAMS


def test_typed_error_keeps_code_and_data() -> None:
    error = call("missing", {"value": 4})["error"]
    assert error == {
        "code": NOT_FOUND,
        "message": "no such thing",
        "data": {"what": 4, "error": "EXECUTION_NOT_FOUND"},
    }


def test_unexpected_exception_is_internal_error(caplog: Any) -> None:
    error = call("boom", {"value": 1})["error"]
    assert error == {
        "code": INTERNAL_ERROR,
        "message": "internal error",
        "data": {"error": "INTERNAL_ERROR"},
    }
    assert any("internal error in boom" in r.getMessage() for r in caplog.records)


def test_notifications_get_no_response() -> None:
    assert call("echo", {"value": 1}, request_id=None) is None
    assert call("boom", {"value": 1}, request_id=None) is None
    assert call("nope", {}, request_id=None) is None


def test_refusal_before_the_handler_is_logged(caplog: Any) -> None:
    caplog.set_level("INFO")
    call("echo", {"value": "not a number"})
    refused = [r for r in caplog.records if "echo refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].__dict__["decision"] == "refused"
