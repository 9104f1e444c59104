"""The MCP endpoint through the official SDK's own client over real HTTP:
tools listed, ``execute`` streaming progress and returning its result,
cancelled calls killing their process group, control/status/transcript, the
agent tool with fake-claude, and the same token and Origin checks as the
WebSocket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from service.cli import main
from service.client import ExecutorClient
from tests.test_projects import FAKE_CLAUDE
from tests.utils import MARKER_NAME, RunningServer, marked_pids, runner, start_server

run = runner(30)


def mcp_url(server: RunningServer) -> str:
    return f"{server.http_url}/mcp"


def client_for(server: RunningServer, headers: dict[str, str] | None = None, **kw: Any) -> Client:
    if headers is None:
        return Client(mcp_url(server), **kw)
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return Client(streamable_http_client(mcp_url(server), http_client=http), **kw)


class Progress:
    def __init__(self) -> None:
        self.updates: list[tuple[float, str | None]] = []
        self.first = asyncio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((progress, message))
        self.first.set()

    @property
    def text(self) -> str:
        return "".join(message or "" for _, message in self.updates)


def test_list_tools_and_execute_streams_progress(
    server: RunningServer, marker: dict[str, str]
) -> None:
    script = "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo oops >&2; exit 2"

    async def main_() -> None:
        async with client_for(server) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {"execute", "control", "status", "transcript", "agent", "approve"}
            assert "argv" in tools["execute"].input_schema["properties"]
            assert tools["execute"].output_schema is not None
            progress = Progress()
            result = await client.call_tool(
                "execute",
                {"argv": ["sh", "-c", script], "env": marker},
                progress_callback=progress,
            )
            structured = result.structured_content
            assert structured is not None
            assert structured["status"] == "failed" and structured["exit_code"] == 2
            assert structured["stdout_tail"] == "line 1\nline 2\nline 3\n"
            assert structured["stderr_tail"] == "oops\n"
            assert len(structured["execution_id"]) == 32
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "exit code 2" in text and "line 3" in text and "oops" in text
            # Output arrived as progress while the command ran, in order.
            assert progress.text == "line 1\nline 2\nline 3\noops\n"
            values = [value for value, _ in progress.updates]
            assert values == sorted(set(values)), "progress must increase"

            ok = await client.call_tool(
                "execute", {"command": "printf 'a b'", "env": marker, "stdin": "ignored"}
            )
            assert not ok.is_error and ok.structured_content["stdout_tail"] == "a b"  # type: ignore[index]
            piped = await client.call_tool("execute", {"argv": ["cat"], "stdin": "in\n"})
            assert piped.structured_content["stdout_tail"] == "in\n"  # type: ignore[index]

            missing = await client.call_tool("execute", {"argv": ["no-such-cmd-ccx"]})
            assert missing.is_error
            assert "(EXEC_FAILED, error -32602)" in missing.content[0].text  # type: ignore[union-attr]
            shell = await client.call_tool("execute", {"command": "echo a | wc", "shell": True})
            assert shell.is_error and "allow_shell" in shell.content[0].text  # type: ignore[union-attr]
            both = await client.call_tool("execute", {"argv": ["true"], "command": "true"})
            assert both.is_error and "exactly one" in both.content[0].text  # type: ignore[union-attr]

    run(main_())


def test_progress_is_rate_limited(server: RunningServer, marker: dict[str, str]) -> None:
    """A flood of output becomes a few progress messages; the tail is exact."""

    async def main_() -> None:
        async with client_for(server) as client:
            progress = Progress()
            started = time.monotonic()
            result = await client.call_tool(
                "execute",
                {"argv": ["seq", "1", "300000"], "env": marker},
                progress_callback=progress,
            )
            elapsed = time.monotonic() - started
            structured = result.structured_content
            assert structured is not None and structured["status"] == "completed"
            assert structured["stdout_bytes"] == 1_988_895  # seq 1 300000 | wc -c
            assert structured["stdout_tail"].endswith("299999\n300000\n")
            assert len(progress.updates) <= elapsed / 0.25 + 3
            assert all(
                len((message or "").encode()) <= 16 * 1024 for _, message in progress.updates
            )
            assert any("characters not shown" in (message or "") for _, message in progress.updates)

    run(main_())


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_cancelled_call_kills_the_process_group(
    server: RunningServer, marker: dict[str, str], mode: str
) -> None:
    """Cancelling the call (``notifications/cancelled`` on the handshake-era
    protocol Claude Code speaks, a closed stream on the 2026 one) runs the kill
    ladder: the whole group is gone, and the execution reads cancelled."""
    value = marker[MARKER_NAME]
    argv = ["sh", "-c", "sleep 60 & echo started; wait", f"tag-{value}"]

    async def main_() -> None:
        async with client_for(server, mode=mode) as client:
            progress = Progress()
            call = asyncio.create_task(
                client.call_tool(
                    "execute",
                    {"argv": argv, "env": marker},
                    progress_callback=progress,
                )
            )
            await asyncio.wait_for(progress.first.wait(), 10)
            assert len(marked_pids(value)) == 2
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            deadline = time.monotonic() + 5
            while marked_pids(value):
                assert time.monotonic() < deadline, "the process group outlived the call"
                await asyncio.sleep(0.05)
            while True:  # the execution ends just after its group is gone
                listing = await client.call_tool("status", {})
                executions = listing.structured_content["executions"]  # type: ignore[index]
                (row,) = [e for e in executions if e["argv"] == argv]
                if row["state"] != "running" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert row["state"] == "cancelled"

    run(main_())


def test_control_status_transcript(server: RunningServer, marker: dict[str, str]) -> None:
    tag = f"tag-{marker[MARKER_NAME]}"
    script = f"echo {tag}; while :; do echo tick; sleep 0.05; done"

    async def main_() -> None:
        async with client_for(server) as client:
            progress = Progress()
            call = asyncio.create_task(
                client.call_tool(
                    "execute",
                    {"argv": ["sh", "-c", script], "env": marker},
                    progress_callback=progress,
                )
            )
            await asyncio.wait_for(progress.first.wait(), 10)
            listing = await client.call_tool("status", {})
            assert tag in listing.content[0].text  # type: ignore[union-attr]
            execution_id = next(
                e["execution_id"]
                for e in listing.structured_content["executions"]  # type: ignore[index]
                if tag in e["command"]
            )
            paused = await client.call_tool(
                "control", {"execution_id": execution_id, "action": "PAUSE"}
            )
            assert paused.structured_content == {"status": "paused", "execution_id": execution_id}
            one = await client.call_tool("status", {"execution_id": execution_id})
            assert one.structured_content["state"] == "paused"  # type: ignore[index]
            again = await client.call_tool(
                "control", {"execution_id": execution_id, "action": "PAUSE"}
            )
            assert again.is_error and "-32005" in again.content[0].text  # type: ignore[union-attr]
            await client.call_tool("control", {"execution_id": execution_id, "action": "RESUME"})
            await client.call_tool("control", {"execution_id": execution_id, "action": "CANCEL"})
            result = await asyncio.wait_for(call, 10)
            assert result.structured_content["status"] == "cancelled"  # type: ignore[index]
            page = await client.call_tool("transcript", {"execution_id": execution_id, "limit": 2})
            assert page.content[0].text.startswith(f"{tag}\ntick\n")  # type: ignore[union-attr]
            assert page.structured_content["more"] is True  # type: ignore[index]
            unknown = await client.call_tool("status", {"execution_id": "nope"})
            assert unknown.is_error and "-32003" in unknown.content[0].text  # type: ignore[union-attr]

    run(main_())


TOKEN = "s3cret-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a token, fake-claude as the Claude CLI and a project root."""
    base = tmp_path_factory.mktemp("mcp-guarded")
    (base / "root" / "demo").mkdir(parents=True)
    (base / "data").mkdir()
    settings = {"token": TOKEN, "claude_bin": FAKE_CLAUDE, "project_roots": [str(base / "root")]}
    running = start_server(base / "data", settings)
    running.root = base / "root"  # type: ignore[attr-defined]
    yield running
    running.stop()


def test_token_and_origin_guard_mcp_and_cli(
    guarded: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """/mcp takes the WebSocket's token and Origin rules; the CLI takes its
    token from --token or CC_EXECUTOR_TOKEN."""
    server = guarded
    url = mcp_url(server)
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"accept": "application/json, text/event-stream"}
    assert httpx2.post(url, json=init, headers=accept).status_code == 401
    wrong = {**accept, "authorization": "Bearer nope"}
    assert httpx2.post(url, json=init, headers=wrong).status_code == 401
    foreign = {**accept, "authorization": "Bearer s3cret-token", "origin": "http://evil.example"}
    assert httpx2.post(url, json=init, headers=foreign).status_code == 403
    rebinding = {**accept, "authorization": "Bearer s3cret-token", "host": "evil.example"}
    assert httpx2.post(url, json=init, headers=rebinding).status_code in (403, 421)

    async def main_() -> None:
        async with client_for(server, BEARER) as client:
            assert len((await client.list_tools()).tools) == 6

    run(main_())

    monkeypatch.setenv("CC_EXECUTOR_URL", f"127.0.0.1:{server.port}")
    monkeypatch.delenv("CC_EXECUTOR_TOKEN", raising=False)
    assert main(["ps"]) == 255
    assert "HTTP 401" in capfd.readouterr().err
    assert main(["ps", "--token", "s3cret-token"]) == 0
    monkeypatch.setenv("CC_EXECUTOR_TOKEN", "s3cret-token")
    assert main(["ps"]) == 0
    assert capfd.readouterr().out.startswith("ID")


def test_agent_tool_and_cli(
    guarded: RunningServer,
    marker: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The agent tool and ``cc-executor agent`` run fake-claude in a project
    (by name), stream its text and end with its result."""
    server = guarded
    root: Path = server.root  # type: ignore[attr-defined]
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake-claude-state")}

    async def main_() -> None:
        async with ExecutorClient(server.url, TOKEN) as ws:
            await ws.call("project.create", {"name": "demo", "path": str(root / "demo")})
        async with client_for(server, BEARER) as client:
            progress = Progress()
            result = await client.call_tool(
                "agent",
                {"project": "demo", "prompt": "hello there", "env": env},
                progress_callback=progress,
            )
            structured = result.structured_content
            assert structured is not None and not result.is_error, result.content
            assert structured["status"] == "completed" and structured["is_error"] is False
            assert structured["session_id"]
            assert "Echo: hello there" in progress.text
            assert "Echo: hello there" in result.content[0].text  # type: ignore[union-attr]
            missing = await client.call_tool("agent", {"project": "nope", "prompt": "x"})
            assert missing.is_error and "-32003" in missing.content[0].text  # type: ignore[union-attr]
            return structured["session_id"]  # type: ignore[no-any-return]

    session_id = run(main_())
    monkeypatch.setenv("CC_EXECUTOR_URL", server.url)
    monkeypatch.setenv("CC_EXECUTOR_TOKEN", TOKEN)
    capfd.readouterr()
    args = ["agent", "demo", "second prompt"]
    args += [f"-e{name}={value}" for name, value in env.items()]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "Echo: second prompt (I remember: hello there)" in out
    assert "agent: done" in err and session_id in err
    assert main([*args[:2], "fake:error", *args[3:]]) == 1
    assert "agent: error" in capfd.readouterr().err


def test_a_progress_message_is_at_most_16_kib() -> None:
    """The note of what was skipped counts, and so do multi-byte characters."""
    from service.server.mcp_endpoint import Tail

    for piece in ("x" * 1000 + "\n", "é" * 999 + "\n", "日本" * 500):
        tail = Tail(16 * 1024)
        for _ in range(40):
            tail.add(piece)
        message = tail.take()
        assert len(message.encode()) <= 16 * 1024
        assert message.startswith("[... ") and message.endswith(piece[-10:])
        skipped = int(message.split()[1])
        kept = message.split("\n", 1)[1]
        assert skipped + len(kept) == 40 * len(piece)
    short = Tail(16 * 1024)
    short.add("hello\n")
    assert short.take() == "hello\n" and short.take() == ""
