"""Server shutdown, dropped connections, and the health endpoints."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

from service.client import ExecutorClient
from tests.utils import get_json, marked_pids, runner

run = runner(90)

TREE = "for i in 1 2 3; do (trap '' TERM; while true; do sleep 0.05; done) & done; wait"


def test_health_endpoints(make_server: Any) -> None:
    fake_claude = str(Path(sys.executable).with_name("fake-claude"))
    running = make_server({"claude_bin": fake_claude})
    assert get_json(running.http_url + "/healthz") == {"status": "ok"}
    health = get_json(running.http_url + "/health")
    assert health["status"] == "ok"
    assert set(health) >= {"version", "uptime_s", "connections", "executions", "limits"}
    assert health["limits"]["max_connections"] == 100


def test_sigterm_cancels_trees_and_closes_with_1001(
    make_server: Any, marker: dict[str, str]
) -> None:
    running = make_server({"kill_grace_s": 1})

    async def main() -> None:
        clients = [ExecutorClient(running.url) for _ in range(2)]
        executions = []
        for client in clients:
            await client.connect()
            for _ in range(2):
                executions.append(await client.execute(argv=["sh", "-c", TREE], env=marker))
        await asyncio.sleep(0.3)
        assert len(marked_pids(marker["CCX_TEST_MARKER"])) >= 16  # 4 shells, 12 subshells, sleeps

        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        results = [await execution.wait(10) for execution in executions]
        assert {result.status for result in results} == {"cancelled"}
        for client in clients:
            await asyncio.wait_for(client.closed.wait(), 5)
            assert client.websocket.close_code == 1001
        code = await asyncio.to_thread(running.proc.wait, 10)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 1 + 1 + 1.5, elapsed  # grace + a second, plus slack for a busy machine
        assert marked_pids(marker["CCX_TEST_MARKER"]) == []

    run(main())


def test_dropped_connection_executions_end_after_detach_grace(
    make_server: Any, marker: dict[str, str]
) -> None:
    running = make_server({"detach_grace_s": 2})

    async def main() -> None:
        ws = await websockets.connect(running.url)
        await ws.recv()
        await ws.send(
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "execute",
                    "params": {"argv": ["sleep", "60"], "env": marker},
                }
            ).decode()
        )
        response = orjson.loads(await ws.recv())
        execution_id = response["result"]["execution_id"]
        await ws.close()
        await asyncio.sleep(0.2)
        assert marked_pids(marker["CCX_TEST_MARKER"])  # still alive within the grace
        deadline = time.monotonic() + 8
        while marked_pids(marker["CCX_TEST_MARKER"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert marked_pids(marker["CCX_TEST_MARKER"]) == []
        async with ExecutorClient(running.url) as client:
            # The group is gone a moment before the server has reaped it and
            # recorded the final state; on a loaded machine that moment shows.
            for _ in range(100):
                state = await client.call("status", {"execution_id": execution_id})
                if state["state"] != "running":
                    break
                await asyncio.sleep(0.05)
            assert state["state"] == "cancelled"

    run(main())


def test_connection_limit(make_server: Any) -> None:
    running = make_server({"max_connections": 2})

    async def main() -> None:
        async with ExecutorClient(running.url), ExecutorClient(running.url):
            async with websockets.connect(running.url) as ws:
                refusal = orjson.loads(await ws.recv())
                assert refusal["error"]["code"] == -32001
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1013

    run(main())
