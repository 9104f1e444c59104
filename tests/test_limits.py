"""The seeds' settings and limits: the ``ALLOWED_COMMANDS`` alias, the idle
timeout (4001) and the project count limit, on real servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.errors import LIMIT_REACHED, NOT_ALLOWED
from tests.utils import RunningServer, run


async def call(ws: ClientConnection, request_id: int, method: str, params: Any) -> Any:
    await ws.send(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    )
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("id") == request_id:
            return message


async def closed_after(ws: ClientConnection) -> tuple[float, int | None, str | None]:
    """Read until the server closes; seconds waited, close code and reason."""
    start = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    received = closed.value.rcvd
    return (
        time.monotonic() - start,
        received.code if received else None,
        received.reason if received else None,
    )


# --- ALLOWED_COMMANDS ----------------------------------------------------------------


def test_seed_allow_list_variable_is_honoured(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_COMMANDS", "echo")
    server = make_server()
    line = server.wait_for_log(lambda e: "allow-list" in e.get("message", ""))
    assert line["allowed_commands"] == ["echo"], line

    async def check() -> None:
        async with connect(server.url, open_timeout=10) as ws:
            await ws.recv()
            refused = await call(ws, 1, "execute", {"argv": ["ls", "/"]})
            assert refused["error"]["code"] == NOT_ALLOWED, refused
            allowed = await call(ws, 2, "execute", {"argv": ["echo", "hi"]})
            assert allowed["result"]["status"] == "started", allowed

    run(check())


def serve_exit(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    base.pop("ALLOWED_COMMANDS", None)
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_both_allow_list_variables_differing_exit_2_with_one_line(tmp_path: Path) -> None:
    done = serve_exit(
        tmp_path, {"ALLOWED_COMMANDS": "echo", "CC_EXECUTOR_ALLOWED_COMMANDS": "echo,ls"}
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ALLOWED_COMMANDS" in lines[0], done.stderr


def test_both_allow_list_variables_agreeing_start(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_COMMANDS", "echo, true")
    server = make_server({"allowed_commands": ["echo", "true"]})
    line = server.wait_for_log(lambda e: "allow-list" in e.get("message", ""))
    assert line["allowed_commands"] == ["echo", "true"]


# --- idle timeout --------------------------------------------------------------------


def test_an_idle_connection_is_closed_4001_and_pongs_do_not_count(
    make_server: Callable[..., RunningServer],
) -> None:
    # Pings every 0.2 s: the client's pongs flow all along and must not keep it open.
    server = make_server({"idle_timeout_s": 1, "ws_ping_interval_s": 0.2})

    async def check() -> None:
        async with connect(server.url, open_timeout=10, ping_interval=None) as ws:
            await ws.recv()
            waited, code, reason = await closed_after(ws)
            assert code == 4001 and reason == "idle timeout", (code, reason)
            assert 0.9 <= waited <= 6, waited

    run(check())


def test_requests_a_live_execution_and_a_subscription_keep_a_connection(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "p").mkdir()
    server = make_server(
        {"idle_timeout_s": 1, "project_roots": [str(tmp_path)], "claude_bin": "true"}
    )

    async def requests_keep_it() -> None:
        async with connect(server.url, open_timeout=10) as ws:
            await ws.recv()
            for n in range(8):  # 2.4 s of a request every 0.3 s
                assert "result" in await call(ws, n, "status", {})
                await asyncio.sleep(0.3)

    async def execution_keeps_it() -> None:
        async with connect(server.url, open_timeout=10) as ws:
            await ws.recv()
            started = await call(ws, 1, "execute", {"argv": ["sleep", "2.5"], "env": marker})
            assert "result" in started, started
            waited, code, _ = await closed_after(ws)
            # Open while sleep runs (2.5 s), closed about a second after it ended.
            assert code == 4001 and waited >= 3.0, (code, waited)

    async def subscription_keeps_it() -> None:
        async with connect(server.url, open_timeout=10) as ws:
            await ws.recv()
            created = await call(
                ws, 1, "project.create", {"name": "p", "path": str(tmp_path / "p")}
            )
            project_id = created["result"]["project_id"]
            assert "result" in await call(ws, 2, "project.subscribe", {"project_id": project_id})
            await asyncio.sleep(2.5)
            assert "result" in await call(ws, 3, "project.unsubscribe", {"project_id": project_id})
            waited, code, _ = await closed_after(ws)
            assert code == 4001 and waited <= 6, (code, waited)

    async def all_of_them() -> None:
        await asyncio.gather(execution_keeps_it(), subscription_keeps_it())

    run(requests_keep_it())
    run(all_of_them())


# --- max projects --------------------------------------------------------------------


def test_project_count_is_limited(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    server = make_server({"max_projects": 2, "project_roots": [str(tmp_path)]})

    async def check() -> None:
        async with connect(server.url, open_timeout=10) as ws:
            await ws.recv()
            for n, name in enumerate(("a", "b")):
                created = await call(
                    ws, n, "project.create", {"name": name, "path": str(tmp_path / name)}
                )
                assert "result" in created, created
            refused = await call(
                ws, 9, "project.create", {"name": "c", "path": str(tmp_path / "c")}
            )
            assert refused["error"]["code"] == LIMIT_REACHED, refused
            assert refused["error"]["data"]["max_projects"] == 2
            listing = await call(ws, 10, "project.list", {})
            assert len(listing["result"]["projects"]) == 2

    run(check())
