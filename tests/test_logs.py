"""The server's log lines as an operator reads them: clean JSON, no ANSI
colour fields, logger names that say what a line is about."""

from __future__ import annotations

import asyncio
from pathlib import Path

import websockets

from tests.utils import start_server


def test_log_lines_are_clean_json_with_meaningful_names(tmp_path: Path) -> None:
    running = start_server(tmp_path)
    try:

        async def visit() -> None:
            async with websockets.connect(running.url) as ws:
                await ws.recv()

        asyncio.run(asyncio.wait_for(visit(), 20))
        running.wait_for_log(lambda e: e.get("message") == "disconnected")
    finally:
        assert running.stop() == 0
    assert running.logs and len(running.logs) == len(running.raw), "a line that is not JSON"
    assert not [e for e in running.logs if "color_message" in e]
    assert not [e for e in running.logs if "\x1b" in str(e)]
    names = {e["message"]: e["logger"] for e in running.logs}
    assert names["listening"] == "service.server"  # tools parse this line
    assert names["connection open"] == "uvicorn.websocket"
    assert names["Shutting down"] == "uvicorn.server"
    assert not [e for e in running.logs if e["logger"] == "uvicorn.error"]
