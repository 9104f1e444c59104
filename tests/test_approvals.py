"""Tool permissions asked of clients, end to end: a real server (with a token),
fake-claude calling ``approve`` on our ``/mcp`` with the official MCP client,
WebSocket clients deciding. Allow, deny with a message, the timeout, a cancel
while pending, a race of two deciders, shutdown, who may decide, and the
per-run credential (config file 0600 and gone after the run, never on the
command line, refused for other tools and after its run)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitRequestParams, ElicitResult

from service import errors
from service.client import ExecutionResult, ExecutorClient, RemoteExecution
from service.projects.approvals import MAX_PENDING_PER_RUN
from tests.test_projects import agent_events, agent_settings, all_messages
from tests.utils import RunningServer, runner, start_server

run = runner(180)

TOKEN = "operator-secret-token"
#: Long enough for a CLI to start and answer on a loaded machine.
TIMEOUT_S = 120
SHORT_TIMEOUT_S = 1
PROMPT = "fake:permission=Bash"


@pytest.fixture(scope="module")
def approvals_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("approvals")
    (base / "root").mkdir()
    (base / "data").mkdir()
    settings = agent_settings(
        base / "root", kill_grace_s=1, token=TOKEN, permission_timeout_s=TIMEOUT_S
    )
    running = start_server(base / "data", settings)
    running.root = base / "root"  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.fixture
def agent_env(marker: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake-claude-state")}


def client(server: RunningServer) -> ExecutorClient:
    return ExecutorClient(server.url, TOKEN)


def mcp_client(server: RunningServer, token: str) -> Client:
    # No read timeout: an approve call waits for its decision.
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(60, read=None)
    )
    return Client(streamable_http_client(f"{server.http_url}/mcp", http_client=http))


async def project(owner: ExecutorClient, server: RunningServer, name: str) -> str:
    path = server.root / name  # type: ignore[attr-defined]
    path.mkdir()
    created = await owner.call("project.create", {"name": name, "path": str(path)})
    return str(created["project_id"])


async def start(
    owner: ExecutorClient, project_id: str, env: dict[str, str], prompt: str = PROMPT
) -> RemoteExecution:
    started = await owner.call(
        "agent.execute",
        {"project_id": project_id, "prompt": prompt, "env": env, "approvals": "clients"},
    )
    return RemoteExecution(owner, started["execution_id"], started)


async def next_note(client: ExecutorClient, method: str, wait_s: float = 60) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(client.notifications.get(), wait_s)
        if message["method"] == method:
            return message["params"]  # type: ignore[no-any-return]


def read(path: str) -> bytes:
    """A file's bytes (blocking: small files, from tests)."""
    with open(path, "rb") as handle:
        return handle.read()


def exists(path: str) -> bool:
    return os.path.exists(path)


def final(result: ExecutionResult) -> dict[str, Any]:
    return next(m["params"] for m in result.events if m["method"] == "agent.result")


def tool_results(result: ExecutionResult) -> list[dict[str, Any]]:
    return [
        block
        for event in agent_events(result)
        if event["type"] == "user"
        for block in event["message"]["content"]
        if block.get("type") == "tool_result"
    ]


def test_allow_reaches_the_tool_and_is_recorded(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    async def main() -> None:
        async with client(approvals_server) as owner, client(approvals_server) as watcher:
            project_id = await project(owner, approvals_server, "allow")
            await watcher.call("project.subscribe", {"project_id": project_id})
            execution = await start(owner, project_id, agent_env)
            asked = await next_note(watcher, "agent.permission")
            assert asked == await next_note(owner, "agent.permission")
            assert asked["execution_id"] == execution.id and asked["project_id"] == project_id
            assert asked["tool_name"] == "Bash" and asked["input"]["command"] == "ls"
            assert asked["tool_use_id"].startswith("toolu_")
            expires = datetime.fromisoformat(asked["expires_at"])
            assert expires.utcoffset() is not None and expires.utcoffset().total_seconds() == 0
            left = (expires - datetime.now(UTC)).total_seconds()
            assert 0 < left <= TIMEOUT_S
            listed = await owner.call("agent.permissions", {"project_id": project_id})
            assert listed == {"requests": [asked]}

            decided = await watcher.call(
                "agent.decide",
                {
                    "request_id": asked["request_id"],
                    "behavior": "allow",
                    "updated_input": {"command": "ls -a"},
                },
            )
            assert decided == {"request_id": asked["request_id"], "behavior": "allow"}
            resolved = await next_note(owner, "agent.permission_resolved")
            assert resolved["behavior"] == "allow" and resolved["by"] == "client"
            assert resolved["connection_id"] == watcher.session_id
            result = await execution.wait(90)
            assert result.status == "completed"
            init = agent_events(result)[0]
            assert init["mcp_servers"] == [{"name": "cc_executor", "status": "connected"}]
            [shown] = tool_results(result)
            assert not shown["is_error"] and '"ls -a"' in shown["content"]
            assert final(result)["is_error"] is False
            assert "allowed" in final(result)["result"]
            with pytest.raises(errors.InvalidState, match="already decided"):
                await owner.call(
                    "agent.decide", {"request_id": asked["request_id"], "behavior": "deny"}
                )
            listed = await owner.call("agent.permissions", {"project_id": project_id})
            assert listed == {"requests": []}
            messages = await all_messages(owner, project_id)
            kinds = [m["kind"] for m in messages]
            assert kinds.index("permission") < kinds.index("permission_resolved")
            asked_entry = messages[kinds.index("permission")]["data"]
            assert asked_entry["request_id"] == asked["request_id"]
            assert asked_entry["tool_name"] == "Bash"
            decided_entry = messages[kinds.index("permission_resolved")]["data"]
            assert decided_entry["by"] == "client"
            assert decided_entry["connection_id"] == watcher.session_id
            assert decided_entry["updated_input"] == {"command": "ls -a"}
            assert decided_entry["decided_at"].endswith("+00:00")
        audit = approvals_server.wait_for_log(
            lambda e: (
                e.get("message") == "permission allowed"
                and e.get("request_id") == asked["request_id"]
            )
        )
        assert audit["by"] == "client" and audit["decided_by"] == watcher.session_id
        assert audit["tool_name"] == "Bash" and audit["project_id"] == project_id

    run(main())


def test_deny_message_reaches_the_result(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    async def main() -> None:
        async with client(approvals_server) as owner:
            project_id = await project(owner, approvals_server, "deny")
            execution = await start(owner, project_id, agent_env, "fake:permission=Write")
            asked = await next_note(owner, "agent.permission")
            assert asked["tool_name"] == "Write" and asked["input"]["file_path"].endswith(".txt")
            await owner.call(
                "agent.decide",
                {"request_id": asked["request_id"], "behavior": "deny", "message": "not today"},
            )
            resolved = await next_note(owner, "agent.permission_resolved")
            assert (resolved["behavior"], resolved["by"]) == ("deny", "client")
            assert resolved["message"] == "not today"
            result = await execution.wait(90)
            [shown] = tool_results(result)
            assert shown["is_error"] and shown["content"] == "not today"
            answer = final(result)["result"]
            assert "denied" in answer and "not today" in answer
            assert not exists(asked["input"]["file_path"])

    run(main())


def test_no_answer_denies_after_the_timeout(
    make_server: Callable[..., RunningServer], tmp_path: Path, agent_env: dict[str, str]
) -> None:
    (tmp_path / "root" / "p").mkdir(parents=True)
    server = make_server(
        agent_settings(tmp_path / "root", kill_grace_s=1, permission_timeout_s=SHORT_TIMEOUT_S)
    )

    async def main() -> None:
        async with ExecutorClient(server.url) as owner:
            created = await owner.call(
                "project.create", {"name": "p", "path": str(tmp_path / "root" / "p")}
            )
            execution = await start(owner, created["project_id"], agent_env)
            asked = await next_note(owner, "agent.permission")
            resolved = await next_note(
                owner, "agent.permission_resolved", wait_s=SHORT_TIMEOUT_S + 10
            )
            assert resolved["request_id"] == asked["request_id"]
            assert (resolved["behavior"], resolved["by"]) == ("deny", "timeout")
            expected = f"denied: no decision within {SHORT_TIMEOUT_S} s"
            assert resolved["message"] == expected
            assert "connection_id" not in resolved
            result = await execution.wait(90)
            assert expected in final(result)["result"]
            with pytest.raises(errors.InvalidState):
                await owner.call(
                    "agent.decide", {"request_id": asked["request_id"], "behavior": "allow"}
                )

    run(main())


def test_cancel_while_pending_denies_and_ends_the_run(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    async def main() -> None:
        async with client(approvals_server) as owner:
            project_id = await project(owner, approvals_server, "cancel")
            execution = await start(owner, project_id, agent_env)
            asked = await next_note(owner, "agent.permission")
            await owner.call("agent.kill", {"project_id": project_id})
            resolved = await next_note(owner, "agent.permission_resolved")
            assert resolved["request_id"] == asked["request_id"]
            assert (resolved["behavior"], resolved["by"]) == ("deny", "cancel")
            result = await execution.wait(90)
            assert result.status == "cancelled"
            listed = await owner.call("agent.permissions", {"project_id": project_id})
            assert listed == {"requests": []}

    run(main())


def test_two_clients_race_and_exactly_one_wins(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    async def main() -> None:
        async with (
            client(approvals_server) as owner,
            client(approvals_server) as first,
            client(approvals_server) as second,
            client(approvals_server) as stranger,
        ):
            project_id = await project(owner, approvals_server, "race")
            for each in (first, second):
                await each.call("project.subscribe", {"project_id": project_id})
            execution = await start(owner, project_id, agent_env)
            asked = await next_note(first, "agent.permission")
            request_id = asked["request_id"]
            with pytest.raises(errors.NotAllowed, match="owner or a subscriber"):
                await stranger.call("agent.decide", {"request_id": request_id, "behavior": "allow"})
            with pytest.raises(errors.NotFound):
                await first.call("agent.decide", {"request_id": "nope", "behavior": "allow"})
            with pytest.raises(errors.InvalidParams):
                await first.call("agent.decide", {"request_id": request_id, "behavior": "maybe"})
            outcomes = await asyncio.gather(
                first.call("agent.decide", {"request_id": request_id, "behavior": "allow"}),
                second.call(
                    "agent.decide",
                    {"request_id": request_id, "behavior": "deny", "message": "no"},
                ),
                return_exceptions=True,
            )
            wins = [o for o in outcomes if isinstance(o, dict)]
            losses = [o for o in outcomes if isinstance(o, errors.InvalidState)]
            assert len(wins) == 1 and len(losses) == 1, outcomes
            winner = first if outcomes[0] is wins[0] else second
            seen = [await next_note(c, "agent.permission_resolved") for c in (owner, first, second)]
            assert all(s == seen[0] for s in seen)
            assert seen[0]["behavior"] == wins[0]["behavior"]
            assert seen[0]["connection_id"] == winner.session_id
            result = await execution.wait(90)
            assert result.status == "completed"
            [shown] = tool_results(result)
            assert shown["is_error"] is (wins[0]["behavior"] == "deny")

    run(main())


def test_per_run_credential(approvals_server: RunningServer, agent_env: dict[str, str]) -> None:
    async def main() -> None:
        async with client(approvals_server) as owner:
            project_id = await project(owner, approvals_server, "credential")
            execution = await start(owner, project_id, agent_env)
            await next_note(owner, "agent.permission")
            status = await owner.call("status", {"execution_id": execution.id})
            argv = status["argv"]
            assert "--permission-prompt-tool=mcp__cc_executor__approve" in argv
            [config_arg] = [a for a in argv if a.startswith("--mcp-config=")]
            path = config_arg.split("=", 1)[1]
            assert os.stat(path).st_mode & 0o777 == 0o600
            config = json.loads(read(path))
            server = config["mcpServers"]["cc_executor"]
            assert server["type"] == "http"
            assert server["url"] == f"{approvals_server.http_url}/mcp"
            token = server["headers"]["Authorization"].removeprefix("Bearer ")
            assert token and token != TOKEN
            cmdline = read(f"/proc/{execution.pid}/cmdline")
            assert token.encode() not in cmdline and TOKEN.encode() not in cmdline
            assert TOKEN.encode() not in read(f"/proc/{execution.pid}/environ")

            # The run's credential opens /mcp, for approve only.
            async with mcp_client(approvals_server, token) as mcp:
                for tool, arguments in (
                    ("execute", {"argv": ["true"]}),
                    ("status", {}),
                    ("agent", {"project": project_id, "prompt": "hi"}),
                ):
                    refused = await mcp.call_tool(tool, arguments)
                    assert refused.is_error, tool
                    assert "only for the approve tool" in refused.content[0].text  # type: ignore[union-attr]
            # ... and nothing else: not the WebSocket, not /health.
            assert (
                httpx2.get(
                    f"{approvals_server.http_url}/health",
                    headers={"Authorization": f"Bearer {token}"},
                ).status_code
                == 401
            )
            with pytest.raises(Exception, match="401"):
                async with ExecutorClient(approvals_server.url, token):
                    pass
            # The operator token cannot answer as the agent.
            async with mcp_client(approvals_server, TOKEN) as mcp:
                refused = await mcp.call_tool("approve", {"tool_name": "Bash", "input": {}})
                assert refused.is_error and "per-run credential" in refused.content[0].text  # type: ignore[union-attr]

            # The credential does open approve, for its own run: the answers of
            # requests pending when the run ends are denials; a run holds at
            # most MAX_PENDING_PER_RUN at once.
            async with mcp_client(approvals_server, token) as mcp:
                # Listed now: the SDK validates results against the tool list,
                # which this credential cannot fetch once its run has ended.
                await mcp.list_tools()
                extra = MAX_PENDING_PER_RUN - 1  # fake-claude's own request is pending
                calls = [
                    asyncio.create_task(
                        mcp.call_tool("approve", {"tool_name": "Read", "input": {"n": n}})
                    )
                    for n in range(extra)
                ]
                for _ in range(1200):
                    listed = await owner.call("agent.permissions", {"project_id": project_id})
                    if len(listed["requests"]) == MAX_PENDING_PER_RUN:
                        break
                    await asyncio.sleep(0.05)
                assert len(listed["requests"]) == MAX_PENDING_PER_RUN
                assert {r["execution_id"] for r in listed["requests"]} == {execution.id}
                over = await mcp.call_tool("approve", {"tool_name": "Read", "input": {}})
                assert over.is_error and "pending permission requests" in over.content[0].text  # type: ignore[union-attr]
                await owner.call("agent.kill", {"project_id": project_id})
                answers = await asyncio.gather(*calls)
            for answer in answers:
                decision = json.loads(answer.content[0].text)  # type: ignore[union-attr]
                assert decision == {
                    "behavior": "deny",
                    "message": "denied: the run ended (cancelled)",
                }
            await execution.wait(90)
            assert not exists(path)
            # After the run, the credential opens nothing.
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            }
            response = httpx2.post(f"{approvals_server.http_url}/mcp", json=init, headers=headers)
            assert response.status_code == 401

    run(main())


def test_default_is_none_and_the_cli_denies(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    """Without approvals (the default setting) no prompt tool is passed: the
    CLI denies on its own, as the real one does in -p mode."""

    async def main() -> None:
        async with client(approvals_server) as owner:
            project_id = await project(owner, approvals_server, "none")
            started = await owner.call(
                "agent.execute", {"project_id": project_id, "prompt": PROMPT, "env": agent_env}
            )
            result = await RemoteExecution(owner, started["execution_id"], started).wait(90)
            status = await owner.call("status", {"execution_id": started["execution_id"]})
            assert not any(a.startswith("--mcp-config") for a in status["argv"])
            [shown] = tool_results(result)
            assert shown["is_error"] and "haven't granted" in shown["content"]
            assert not any(a.startswith("--permission-prompt-tool") for a in status["argv"])
            seen = []
            while not owner.notifications.empty():
                seen.append(owner.notifications.get_nowait()["method"])
            assert "agent.permission" not in seen
            assert "denied" in final(result)["result"]

    run(main())


def test_shutdown_denies_pending(
    make_server: Callable[..., RunningServer], tmp_path: Path, agent_env: dict[str, str]
) -> None:
    (tmp_path / "root" / "p").mkdir(parents=True)
    server = make_server(
        agent_settings(tmp_path / "root", kill_grace_s=1, agent_approvals="clients")
    )

    async def main() -> None:
        async with ExecutorClient(server.url) as owner:
            created = await owner.call(
                "project.create", {"name": "p", "path": str(tmp_path / "root" / "p")}
            )
            started = await owner.call(
                "agent.execute",
                {"project_id": created["project_id"], "prompt": PROMPT, "env": agent_env},
            )
            execution = RemoteExecution(owner, started["execution_id"], started)
            asked = await next_note(owner, "agent.permission")
            server.proc.send_signal(signal.SIGTERM)
            resolved = await next_note(owner, "agent.permission_resolved")
            assert resolved["request_id"] == asked["request_id"]
            assert (resolved["behavior"], resolved["by"]) == ("deny", "shutdown")
            result = await execution.wait(90)
            assert result.completed["status"] in ("cancelled", "completed")

    run(main())
    assert server.proc.wait(15) == 0


def test_mcp_agent_asks_by_elicitation(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    """The MCP ``agent`` caller is asked with elicitation/create; its answer decides."""
    asked: list[str] = []

    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"allow": False, "message": "via MCP"})

    async def main() -> None:
        async with client(approvals_server) as owner, client(approvals_server) as watcher:
            project_id = await project(owner, approvals_server, "mcp-elicit")
            await watcher.call("project.subscribe", {"project_id": project_id})
            http = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(60)
            )
            transport = streamable_http_client(f"{approvals_server.http_url}/mcp", http_client=http)
            async with Client(transport, mode="legacy", elicitation_callback=elicit) as mcp:
                result = await mcp.call_tool(
                    "agent",
                    {
                        "project": "mcp-elicit",
                        "prompt": PROMPT,
                        "env": agent_env,
                        "approvals": "clients",
                    },
                )
            text = result.content[0].text  # type: ignore[union-attr]
            assert "denied" in text and "via MCP" in text, text
            assert len(asked) == 1 and "Bash" in asked[0] and '"ls"' in asked[0]
            resolved = await next_note(watcher, "agent.permission_resolved")
            assert (resolved["by"], resolved["message"]) == ("client", "via MCP")
            assert resolved["connection_id"].startswith("mcp-agent-")

    run(main())


def test_mcp_agent_without_elicitation_is_denied(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    async def main() -> None:
        async with client(approvals_server) as owner:
            project_id = await project(owner, approvals_server, "mcp-plain")
            async with mcp_client(approvals_server, TOKEN) as mcp:
                result = await mcp.call_tool(
                    "agent",
                    {
                        "project": project_id,
                        "prompt": PROMPT,
                        "env": agent_env,
                        "approvals": "clients",
                    },
                )
            text = result.content[0].text  # type: ignore[union-attr]
            assert "denied: the MCP client does not support elicitation" in text, text

    run(main())


def cli(server: RunningServer, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CC_EXECUTOR_URL": server.url, "CC_EXECUTOR_TOKEN": TOKEN}
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_line(stream: Any, needle: str, wait_s: float = 90) -> str:
    """Read ``stream`` until a line containing ``needle`` (blocking, with a
    deadline). Reads the file descriptor itself: a buffered ``readline`` after
    ``select`` could leave the wanted line in Python's buffer, unseen."""
    deadline = time.monotonic() + wait_s
    fd = stream.fileno()
    pending = b""
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            seen.append(line)
            if needle in line:
                return line
    raise AssertionError(f"no line with {needle!r}; saw {seen}")


def test_cli_approvals_follows_a_project(
    approvals_server: RunningServer, agent_env: dict[str, str]
) -> None:
    """``cc-executor approvals`` in one terminal answers a run started elsewhere,
    including a request that was pending before it attached."""

    async def main() -> None:
        async with client(approvals_server) as owner:
            project_id = await project(owner, approvals_server, "cli-follow")
            execution = await start(owner, project_id, agent_env)
            await next_note(owner, "agent.permission")
            follower = cli(approvals_server, "approvals", "cli-follow", "--count", "1")
            try:
                assert follower.stdin is not None and follower.stderr is not None
                try:
                    line = await asyncio.to_thread(wait_line, follower.stderr, "[permission]")
                except AssertionError as exc:
                    listed = await owner.call("agent.permissions", {"project_id": project_id})
                    logs = [e for e in approvals_server.logs if "permission" in str(e)]
                    raise AssertionError(f"{exc}; pending {listed}; log {logs[-5:]}") from None
                assert 'Bash {"command": "ls"' in line
                follower.stdin.write("y\n")
                follower.stdin.flush()
                out, err = await asyncio.to_thread(follower.communicate, None, 90)
            finally:
                if follower.poll() is None:
                    follower.kill()
                    follower.wait()
            assert follower.returncode == 0, err
            assert out.startswith("allow Bash"), err
            resolved = await next_note(owner, "agent.permission_resolved")
            assert resolved["behavior"] == "allow"
            result = await execution.wait(90)
            assert "allowed" in final(result)["result"]

    run(main())


def test_cli_agent_approve_asks_in_the_terminal(approvals_server: RunningServer) -> None:
    async def main() -> None:
        async with client(approvals_server) as owner:
            await project(owner, approvals_server, "cli-agent")

    run(main())
    agent = cli(approvals_server, "agent", "cli-agent", PROMPT, "--approve")
    try:
        assert agent.stdin is not None and agent.stderr is not None
        line = wait_line(agent.stderr, "[permission]")
        assert "Bash" in line
        agent.stdin.write("n not on my machine\n")
        agent.stdin.flush()
        out, err = agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err
    assert "denied" in out and "not on my machine" in out


def test_cli_agent_without_approve_says_why_it_waits(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """On a server whose default is ``clients``, ``cc-executor agent`` without
    ``--approve`` tells why the run waits; here nobody answers: the timeout."""
    (tmp_path / "root" / "waits").mkdir(parents=True)
    settings = agent_settings(
        tmp_path / "root", agent_approvals="clients", permission_timeout_s=SHORT_TIMEOUT_S
    )
    server = make_server(settings)

    async def main() -> None:
        async with ExecutorClient(server.url) as owner:
            await owner.call(
                "project.create", {"name": "waits", "path": str(tmp_path / "root" / "waits")}
            )

    run(main())
    env = {**os.environ, "CC_EXECUTOR_URL": server.url}
    done = subprocess.run(
        [sys.executable, "-m", "service", "agent", "waits", PROMPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "asks to use Bash" in done.stderr and "waiting for a client" in done.stderr
    assert "permission deny by timeout" in done.stderr
    assert f"denied: no decision within {SHORT_TIMEOUT_S} s" in done.stdout
