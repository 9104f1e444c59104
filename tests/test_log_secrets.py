"""No secret and no ``env`` value in the log at any level: a DEBUG run (which
traces every WebSocket frame and handshake header) is scanned for planted
values."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.test_projects import agent_settings
from tests.utils import RunningServer, run


def test_a_debug_log_holds_no_env_value_and_no_token(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    token = "tok-" + uuid.uuid4().hex
    # Short values, last in their frame: the DEBUG frame trace shows a long
    # payload's head and tail only, and the test must not pass by that luck.
    planted = {name: f"p{uuid.uuid4().hex[:10]}" for name in ("EXEC", "AGENT", "BAD")}
    root = tmp_path / "root"
    (root / "p").mkdir(parents=True)
    server = make_server({**agent_settings(root, kill_grace_s=1), "token": token})
    assert server.env["CC_EXECUTOR_LOG_LEVEL"] == "DEBUG"

    async def main() -> None:
        url = f"{server.url}?token={token}"
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.recv()

            async def call(request_id: int, method: str, params: Any) -> Any:
                await ws.send(
                    json.dumps(
                        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
                    )
                )
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if message.get("id") == request_id:
                        return message

            # The child prints its environment: the value travels in output frames too.
            env = {**marker, "PLANTED": planted["EXEC"]}
            started = await call(1, "execute", {"argv": ["env"], "env": env})
            assert "result" in started, started
            refused = await call(2, "execute", {"argv": [""], "env": {"X": planted["BAD"]}})
            assert "error" in refused
            project = await call(3, "project.create", {"name": "p", "path": str(root / "p")})
            agent_env = {
                **marker,
                "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake"),
                "PLANTED": planted["AGENT"],
            }
            ran = await call(
                4,
                "agent.execute",
                {"project_id": project["result"]["project_id"], "prompt": "hi", "env": agent_env},
            )
            assert "result" in ran, ran
            await asyncio.sleep(1.5)  # output and completions go out (and are traced)

    run(main())
    time.sleep(0.5)
    server.stop()
    text = "\n".join(server.raw)
    assert '"level": "DEBUG"' in text and "> TEXT" in text, "the run must trace frames"
    for name, value in planted.items():
        assert value not in text, f"{name} env value in the log"
    assert token not in text, "the token is in the log"
