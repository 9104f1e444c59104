"""Projects: path rules, the agent command line, stream-json parsing, the
registry over the wire, and its survival across a restart."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service import errors
from service.client import ExecutionResult, ExecutorClient, RemoteExecution
from service.projects.argv import AgentOptions, agent_argv
from service.projects.paths import check_not_nested, resolve_project_path
from service.stream_json import AgentResult, parse_lines, session_of
from tests.utils import RunningServer, start_server

FAKE_CLAUDE = str(Path(sys.executable).with_name("fake-claude"))


# --- helpers shared with test_agents.py ------------------------------------------


def agent_settings(root: Path, **extra: Any) -> dict[str, Any]:
    return {"claude_bin": FAKE_CLAUDE, "project_roots": [str(root)], **extra}


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server per module with fake-claude and a project root."""
    base = tmp_path_factory.mktemp("agents")
    (base / "root").mkdir()
    (base / "data").mkdir()
    running = start_server(base / "data", agent_settings(base / "root", kill_grace_s=1))
    running.root = base / "root"  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.fixture
def agent_env(marker: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The env of every agent.execute: the leak marker and fake-claude's state."""
    return {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake-claude-state")}


def new_project_dir(server: RunningServer, name: str) -> Path:
    root: Path = server.root  # type: ignore[attr-defined]
    path = root / name
    path.mkdir()
    return path


async def create_project(client: ExecutorClient, name: str, path: Path) -> str:
    project = await client.call("project.create", {"name": name, "path": str(path)})
    return str(project["project_id"])


async def run_agent(
    client: ExecutorClient, project_id: str, prompt: str, env: dict[str, str], **params: Any
) -> tuple[dict[str, Any], ExecutionResult]:
    started = await client.call(
        "agent.execute", {"project_id": project_id, "prompt": prompt, "env": env, **params}
    )
    execution = RemoteExecution(client, started["execution_id"], started)
    return started, await execution.wait(30)


def agent_events(result: ExecutionResult) -> list[dict[str, Any]]:
    return [m["params"]["event"] for m in result.events if m["method"] == "agent.event"]


def agent_result(result: ExecutionResult) -> dict[str, Any]:
    methods = [m["method"] for m in result.events]
    assert methods.count("agent.result") == 1, methods
    assert methods[-1] == "process.completed"
    return next(m["params"] for m in result.events if m["method"] == "agent.result")


async def all_messages(client: ExecutorClient, project_id: str, limit: int = 1000) -> list[Any]:
    messages: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"project_id": project_id, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = await client.call("messages.get", params)
        messages += page["messages"]
        cursor = page["next_cursor"]
        if cursor is None:
            return messages


# --- pure ---------------------------------------------------------------------------


def test_path_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "inner").mkdir(parents=True)
    (root / "file").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "alias").symlink_to(root / "a")
    roots = [root]

    def refused(path: str, rule: str) -> str:
        with pytest.raises(errors.InvalidParams) as info:
            resolve_project_path(path, roots)
        assert info.value.data["rule"] == rule
        return info.value.message

    assert "absolute" in refused("root/a", "absolute")
    assert "does not exist" in refused(str(root / "missing"), "exists")
    assert "not a directory" in refused(str(root / "file"), "directory")
    assert "outside the allowed project roots" in refused(str(root / "escape"), "roots")
    assert "outside" in refused(str(outside), "roots")
    assert "outside" in refused(str(root / "a" / ".." / ".." / "outside"), "roots")
    assert resolve_project_path(str(root / "alias"), roots) == str(root / "a")
    assert resolve_project_path(str(root), roots) == str(root)

    others = [("a", str(root / "a"))]
    for path, word in (
        (root / "a", "already registered"),
        (root / "a" / "inner", "inside project"),
        (root, "contains project"),
    ):
        with pytest.raises(errors.InvalidParams, match=word):
            check_not_nested(str(path), others)
    check_not_nested(str(root / "ab"), others)  # a prefix is not a parent


def test_agent_argv_puts_the_prompt_last_after_double_dash() -> None:
    prompt = "--dangerously-skip-permissions; rm -rf /\n\"quoted\" 'x' $(y)"
    options = AgentOptions(
        prompt=prompt, model="sonnet", max_turns=3, allowed_tools=["Bash", "Read"]
    )
    argv = agent_argv("claude", ["--strict-mcp-config"], options, "sess-1")
    assert argv[:5] == ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert argv[-2:] == ["--", prompt]
    assert argv.count("--") == 1
    assert "--resume=sess-1" in argv and "--model=sonnet" in argv and "--max-turns=3" in argv
    assert "--allowedTools=Bash,Read" in argv and "--strict-mcp-config" in argv
    assert "--resume=sess-1" not in agent_argv("claude", [], options, None)


def test_stream_json_parsing() -> None:
    text = (
        '{"type":"system","subtype":"init","session_id":"s1"}\n'
        "not json\n"
        '{"type":"assistant","message":{}}\n'
        "[1, 2]\n"
        '{"type":"result","subtype":"success","is_error":false,"session_id":"s1",'
        '"total_cost_usd":0.5,"num_turns":2,"duration_ms":10,"result":"ok"}\n'
        '{"type":"assis'
    )
    parsed = [event for _, event in parse_lines(text)]
    assert [e["type"] for e in parsed] == ["system", "assistant", "result"]
    assert [session_of(e) for e in parsed] == ["s1", None, "s1"]
    result = AgentResult.from_event(parsed[-1])
    assert (result.cost_usd, result.num_turns, result.is_error, result.result) == (
        0.5,
        2,
        False,
        "ok",
    )


# --- over the wire ------------------------------------------------------------------


def test_project_create_rules_over_the_wire(agent_server: RunningServer, tmp_path: Path) -> None:
    root: Path = agent_server.root  # type: ignore[attr-defined]
    base = new_project_dir(agent_server, "rules")
    (base / "app" / "sub").mkdir(parents=True)
    (base / "file.txt").write_text("x")
    (base / "link-out").symlink_to(tmp_path)

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            app_id = await create_project(client, "rules-app", base / "app")

            async def refused(name: str, path: str, words: str) -> None:
                with pytest.raises(errors.InvalidParams, match=words):
                    await client.call("project.create", {"name": name, "path": path})

            await refused("r1", "relative/path", "must be absolute")
            await refused("r2", str(base / "missing"), "does not exist")
            await refused("r3", str(base / "file.txt"), "not a directory")
            await refused("r4", str(base / "link-out"), "outside the allowed project roots")
            await refused("r5", str(base / "app" / "sub"), "inside project 'rules-app'")
            await refused("r6", str(base), "contains project 'rules-app'")
            await refused("r7", str(base / "app"), "already registered")
            await refused("rules-app", str(base / "file.txt"), "already exists")
            await refused(" padded", str(base), "project name")
            with pytest.raises(errors.InvalidParams, match="name"):
                await client.call("project.create", {"path": str(base)})
            with pytest.raises(errors.NotFound):
                await client.call("project.get", {"project_id": "nope"})
            got = await client.call("project.get", {"project_id": app_id})
            assert got["state"] == "idle" and got["path"] == str(base / "app")
            assert got["session_id"] is None and got["runs"] == 0
            names = [p["name"] for p in (await client.call("project.list", {}))["projects"]]
            assert "rules-app" in names
            assert (await client.call("project.delete", {"project_id": app_id}))["deleted"]
            with pytest.raises(errors.NotFound):
                await client.call("project.delete", {"project_id": app_id})
            # Deleted, the directory can be registered again (and its parent too).
            again = await create_project(client, "rules-again", base)
            await client.call("project.delete", {"project_id": again})
            assert str(root) != str(base)

    asyncio.run(main())


def test_projects_and_history_survive_a_restart(
    make_server: Callable[..., RunningServer],
    tmp_path: Path,
    agent_env: dict[str, str],
    store_url: str | None,
) -> None:
    """On both engines (tests/pg.py): on PostgreSQL both servers use one database."""
    root = tmp_path / "root"
    (root / "keep").mkdir(parents=True)
    settings = agent_settings(root, **({"store_url": store_url} if store_url else {}))
    first = make_server(settings)

    async def before() -> tuple[str, str, list[Any]]:
        async with ExecutorClient(first.url) as client:
            project_id = await create_project(client, "keep", root / "keep")
            _, result = await run_agent(client, project_id, "remember me", agent_env)
            session = agent_result(result)["session_id"]
            # An agent still running when the server stops is ended and recorded.
            started = await client.call(
                "agent.execute",
                {"project_id": project_id, "prompt": "fake:hang", "env": agent_env},
            )
            execution = RemoteExecution(client, started["execution_id"], started)
            async for message in execution.events():
                if message["method"] == "agent.event":
                    break
            return project_id, session, await all_messages(client, project_id)

    project_id, session, history = asyncio.run(before())
    first.stop()
    assert "projects loaded" in first.log_messages()
    second = make_server(settings, data_dir=first.data_dir)

    async def after() -> None:
        async with ExecutorClient(second.url) as client:
            project = await client.call("project.get", {"project_id": project_id})
            assert project["name"] == "keep" and project["state"] == "idle"
            assert project["session_id"] == session
            assert project["runs"] == 2 and project["turns"] == 2
            assert project["last_status"] == "cancelled" and project["cost_usd"] > 0
            stored = await all_messages(client, project_id)
            assert stored[: len(history)] == history
            kinds = [m["kind"] for m in stored]
            assert kinds == ["prompt", *["event"] * 5, "result", "prompt", "event", "result"]
            assert stored[0]["data"]["prompt"] == "remember me"
            assert stored[-1]["data"]["status"] == "cancelled"
            # The next run resumes the session the first server saved.
            started, result = await run_agent(client, project_id, "again", agent_env)
            assert started["resumed_session_id"] == session
            assert (
                agent_result(result)["result"]
                == "Echo: again (I remember: remember me | fake:hang)"
            )

    asyncio.run(after())


def test_projects_without_the_durable_store(
    make_server: Callable[..., RunningServer], tmp_path: Path, agent_env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    (root / "mem").mkdir(parents=True)
    server = make_server(agent_settings(root, store_enabled=False))

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            project_id = await create_project(client, "mem", root / "mem")
            _, result = await run_agent(client, project_id, "in memory", agent_env)
            assert agent_result(result)["result"] == "Echo: in memory"
            kinds = [m["kind"] for m in await all_messages(client, project_id)]
            assert kinds == ["prompt", *["event"] * 5, "result"]
            await client.call("project.delete", {"project_id": project_id})
            assert (await client.call("project.list", {}))["projects"] == []

    asyncio.run(main())
