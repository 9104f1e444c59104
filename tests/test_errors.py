"""Every error object carries a stable symbolic name in ``data.error``: the
shape of ``to_error``, the table in docs/protocol.md, and the names a real
server sends for each cause."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from service import errors
from tests.utils import RunningServer

ROOT = Path(__file__).resolve().parent.parent


def test_data_is_always_an_object_with_the_name() -> None:
    assert errors.InvalidState("x").to_error() == {
        "code": errors.INVALID_STATE,
        "message": "x",
        "data": {"error": "INVALID_STATE"},
    }
    listed = errors.InvalidParams("bad", [{"loc": ["a"]}]).to_error()
    assert listed["data"] == {"error": "INVALID_PARAMS", "details": [{"loc": ["a"]}]}
    named = errors.NotFound("gone", {"execution_id": "e"}).to_error()
    assert named["data"] == {"execution_id": "e", "error": "EXECUTION_NOT_FOUND"}
    assert errors.ProjectNotFound("p").to_error()["data"]["error"] == "PROJECT_NOT_FOUND"
    assert errors.PauseTimeout("t").to_error()["code"] == errors.TIMED_OUT
    # A class that names nothing gets the name of its code.
    assert errors.RpcError("s", code=-32007).to_error()["data"]["error"] == "STORE_ERROR"
    assert errors.RpcError("n", name="EXEC_FAILED").error_name == "EXEC_FAILED"


def test_every_name_is_documented_with_its_code() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (-32\d{3}) \|", text, re.MULTILINE))
    for name, code in errors.NAMES.items():
        assert rows.get(name) == str(code), f"{name} ({code}) missing from docs/protocol.md"
    assert set(rows) == set(errors.NAMES), "docs/protocol.md names what the server never sends"


def test_the_client_keeps_the_name() -> None:
    from service.client import error_from_wire

    wire = errors.ProjectNotFound("project not found: x", {"project_id": "x"}).to_error()
    back = error_from_wire(wire)
    assert isinstance(back, errors.NotFound)
    assert back.error_name == "PROJECT_NOT_FOUND"


async def exchange(url: str, frames: list[Any]) -> list[dict[str, Any]]:
    """Send each frame, return the response to each (notifications skipped)."""
    answers = []
    async with websockets.connect(url) as ws:
        json.loads(await ws.recv())  # connected
        for frame in frames:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
            while True:
                message = json.loads(await ws.recv())
                if "method" not in message:
                    answers.append(message)
                    break
    return answers


def request(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def test_a_real_server_names_every_cause(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    root = tmp_path / "roots"
    root.mkdir()
    server = make_server({"allowed_commands": ["echo", "sleep"], "project_roots": [str(root)]})
    frames: list[Any] = [
        '{"jsonrpc": "2.0", "id": 1',
        {"jsonrpc": "1.0", "id": 2, "method": "status"},
        request(3, "execute.now", {}),
        request(4, "execute", {"argv": ["echo"], "timout": 1}),
        request(5, "execute", {"argv": ["rm", "-rf", "/tmp/x"]}),
        request(6, "execute", {"command": "echo $HOME", "shell": True}),
        request(7, "execute", {"argv": ["echo", "x"], "cwd": "relative/dir"}),
        request(8, "control", {"type": "CANCEL", "execution_id": "f00"}),
        request(9, "project.get", {"project_id": "f00"}),
        request(10, "project.create", {"name": "p", "path": "/"}),
        request(11, "control", {"type": "RESUME"}),
    ]
    answers = asyncio.run(asyncio.wait_for(exchange(server.url, frames), 30))
    names = [answer["error"]["data"]["error"] for answer in answers]
    assert names == [
        "PARSE_ERROR",
        "INVALID_REQUEST",
        "METHOD_NOT_FOUND",
        "INVALID_PARAMS",
        "SECURITY_DENIED",
        "SECURITY_DENIED",
        "INVALID_PATH",
        "EXECUTION_NOT_FOUND",
        "PROJECT_NOT_FOUND",
        "INVALID_PATH",
        "EXECUTION_NOT_FOUND",
    ]
    assert answers[3]["error"]["data"]["details"][0]["loc"] == ["timout"]
    assert answers[4]["error"]["data"]["command"] == "rm"


@pytest.mark.parametrize("argv", [["nosuch-cc-executor-program", "a b"]])
def test_a_command_that_cannot_start_reads_like_a_shell(
    server: RunningServer, argv: list[str]
) -> None:
    answers = asyncio.run(
        asyncio.wait_for(exchange(server.url, [request(1, "execute", {"argv": argv})]), 30)
    )
    error = answers[0]["error"]
    assert error["data"]["error"] == "EXEC_FAILED"
    assert error["message"].startswith("cannot execute nosuch-cc-executor-program 'a b': ")
    assert "[" not in error["message"]
