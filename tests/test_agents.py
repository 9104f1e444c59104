"""Claude Code agents in projects, with fake-claude: events, results, sessions,
broadcast to subscribers, kill, one agent per project, every failure scenario."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from service import errors
from service.client import ExecutorClient, RemoteExecution
from tests import test_projects as shared
from tests.test_projects import (
    agent_events,
    agent_result,
    all_messages,
    create_project,
    new_project_dir,
    run_agent,
)
from tests.utils import RunningServer

agent_server = shared.agent_server
agent_env = shared.agent_env


async def wait_for(client: ExecutorClient, method: str, **match: Any) -> dict[str, Any]:
    """The next notification (outside executions) with ``method`` and ``match``ing params."""
    while True:
        message = await asyncio.wait_for(client.notifications.get(), 15)
        params = message["params"]
        if message["method"] == method and all(params.get(k) == v for k, v in match.items()):
            return params


async def first_event(execution: RemoteExecution) -> dict[str, Any]:
    """Wait for the execution's first agent.event (the init): the agent is up."""
    async for message in execution.events():
        if message["method"] == "agent.event":
            return message["params"]["event"]  # type: ignore[no-any-return]
    raise AssertionError("no agent.event")


def test_agent_run_events_result_and_counters(
    agent_server: RunningServer, agent_env: dict[str, str]
) -> None:
    path = new_project_dir(agent_server, "basic")
    (path / "hello.txt").write_text("hi")

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, "basic", path)
            started, result = await run_agent(client, project_id, "hello", agent_env)
            assert started["status"] == "started" and started["resumed_session_id"] is None
            assert result.status == "completed" and result.exit_code == 0
            events = agent_events(result)
            assert [e["type"] for e in events] == [
                "system",
                "assistant",
                "user",
                "assistant",
                "result",
            ]
            assert events[0]["cwd"] == str(path)
            assert "hello.txt" in events[2]["message"]["content"][0]["content"]
            final = agent_result(result)
            session = events[0]["session_id"]
            assert final["session_id"] == session and final["status"] == "completed"
            assert final["is_error"] is False and final["result"] == "Echo: hello"
            assert final["num_turns"] == 2 and final["cost_usd"] > 0
            # The raw lines are in the transcript too.
            assert '"type":"result"' in result.stdout
            project = await client.call("project.get", {"project_id": project_id})
            assert project["session_id"] == session and project["state"] == "idle"
            assert (project["runs"], project["turns"]) == (1, 2)
            status = await client.call("status", {"execution_id": started["execution_id"]})
            assert status["project_id"] == project_id and status["cwd"] == str(path)
            assert status["argv"][-2:] == ["--", "hello"]

            messages = await all_messages(client, project_id)
            assert [m["kind"] for m in messages] == ["prompt", *["event"] * 5, "result"]
            assert [m["data"] for m in messages[1:6]] == events
            assert messages[-1]["data"]["result"] == "Echo: hello"
            assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
            paged = await all_messages(client, project_id, limit=2)
            assert paged == messages
            later = await client.call(
                "messages.get", {"project_id": project_id, "since": messages[3]["ts"]}
            )
            assert later["messages"] == [m for m in messages if m["ts"] >= messages[3]["ts"]]
            with pytest.raises(errors.InvalidParams, match="cursor"):
                await client.call("messages.get", {"project_id": project_id, "cursor": "x"})
            # attach replays the agent's raw stream-json from the transcript.
            async with ExecutorClient(agent_server.url) as late:
                replay = await (await late.attach(started["execution_id"])).wait(10)
                assert replay.stdout == result.stdout and replay.status == "completed"

    asyncio.run(main())


def test_second_run_resumes_the_session_then_new_session(
    agent_server: RunningServer, agent_env: dict[str, str]
) -> None:
    path = new_project_dir(agent_server, "resume")

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, "resume", path)
            _, first = await run_agent(client, project_id, "first", agent_env)
            session = agent_result(first)["session_id"]
            started, second = await run_agent(client, project_id, "second", agent_env)
            assert started["resumed_session_id"] == session
            assert agent_events(second)[0]["session_id"] == session
            assert agent_result(second)["result"] == "Echo: second (I remember: first)"
            project = await client.call("agent.new_session", {"project_id": project_id})
            assert project["session_id"] is None
            started, third = await run_agent(client, project_id, "third", agent_env)
            assert started["resumed_session_id"] is None
            assert agent_result(third)["session_id"] != session
            assert agent_result(third)["result"] == "Echo: third"
            # resume: false starts afresh without forgetting first.
            _, fourth = await run_agent(client, project_id, "fourth", agent_env, resume=False)
            assert agent_result(fourth)["result"] == "Echo: fourth"

    asyncio.run(main())


def test_unknown_session_fails_and_is_forgotten(
    agent_server: RunningServer, agent_env: dict[str, str]
) -> None:
    path = new_project_dir(agent_server, "lost")

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, "lost", path)
            await run_agent(client, project_id, "first", agent_env)
            # The CLI's own session store is gone (another machine, a wipe).
            wiped = {
                **agent_env,
                "FAKE_CLAUDE_STATE_DIR": agent_env["FAKE_CLAUDE_STATE_DIR"] + "-2",
            }
            _, failed = await run_agent(client, project_id, "second", wiped)
            assert failed.status == "failed" and failed.exit_code == 1
            final = agent_result(failed)
            assert final["is_error"] is True and final["status"] == "failed"
            assert any("No conversation found" in e for e in final["errors"])
            project = await client.call("project.get", {"project_id": project_id})
            assert project["session_id"] is None and project["last_status"] == "failed"
            _, fresh = await run_agent(client, project_id, "third", wiped)
            assert agent_result(fresh)["result"] == "Echo: third"

    asyncio.run(main())


def test_dangerous_prompt_arrives_as_one_literal_prompt(
    agent_server: RunningServer, agent_env: dict[str, str]
) -> None:
    path = new_project_dir(agent_server, "literal")
    prompts = [
        "--dangerously-skip-permissions; rm -rf /",
        "-p",
        "--",
        'it\'s "quoted"\nand $(echo nested) `ticks` && | > /tmp/x',
    ]

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, "literal", path)
            for prompt in prompts:
                _, result = await run_agent(client, project_id, prompt, agent_env, resume=False)
                assert result.status == "completed", result.stderr
                assert agent_events(result)[0]["permissionMode"] == "default"
                assert agent_result(result)["result"] == f"Echo: {prompt}"
            assert sorted(p.name for p in path.iterdir()) == []

    asyncio.run(main())


def test_subscribers_see_every_event_of_another_clients_run(
    agent_server: RunningServer, agent_env: dict[str, str]
) -> None:
    path = new_project_dir(agent_server, "shared")

    async def watch(client: ExecutorClient, project_id: str) -> tuple[list[Any], list[Any]]:
        running = await wait_for(client, "project.state", state="running")
        execution = RemoteExecution(client, running["execution_id"], {})
        result = await execution.wait(30)
        idle = await wait_for(client, "project.state", state="idle")
        assert idle["last_status"] == "completed"
        return result.events, [running, idle]

    async def main() -> None:
        async with (
            ExecutorClient(agent_server.url) as runner,
            ExecutorClient(agent_server.url) as one,
            ExecutorClient(agent_server.url) as two,
        ):
            project_id = await create_project(runner, "shared", path)
            for client in (one, two):
                subscribed = await client.call("project.subscribe", {"project_id": project_id})
                assert subscribed["subscribed"] is True
            watchers = [asyncio.create_task(watch(c, project_id)) for c in (one, two)]
            _, result = await run_agent(runner, project_id, "fake:slow=0.2 shared", agent_env)
            seen = await asyncio.gather(*watchers)
            expected = [m for m in result.events if m["method"] != "process.completed"]
            for events, _ in seen:
                assert [m for m in events if m["method"] != "process.completed"] == expected
                methods = [m["method"] for m in events]
                assert methods[0] == "process.started" and methods[-1] == "process.completed"
                assert methods.count("agent.event") == 5 and methods.count("agent.result") == 1
            # Unsubscribed: the next run reaches only the one still subscribed.
            await two.call("project.unsubscribe", {"project_id": project_id})
            watcher = asyncio.create_task(watch(one, project_id))
            await run_agent(runner, project_id, "again", agent_env)
            await watcher
            await asyncio.sleep(0.2)
            assert two.notifications.empty()

    asyncio.run(main())


def test_one_agent_per_project_and_kill_mid_run(
    agent_server: RunningServer, agent_env: dict[str, str]
) -> None:
    path = new_project_dir(agent_server, "busy")

    async def main() -> None:
        async with (
            ExecutorClient(agent_server.url) as client,
            ExecutorClient(agent_server.url) as other,
        ):
            project_id = await create_project(client, "busy", path)
            await client.call("project.subscribe", {"project_id": project_id})
            started = await client.call(
                "agent.execute",
                {"project_id": project_id, "prompt": "fake:hang", "env": agent_env},
            )
            execution = RemoteExecution(client, started["execution_id"], started)
            assert (await first_event(execution))["subtype"] == "init"
            for method, params in (
                ("agent.execute", {"prompt": "second", "env": agent_env}),
                ("project.delete", {}),
                ("agent.new_session", {}),
            ):
                with pytest.raises(errors.InvalidState):
                    await other.call(method, {"project_id": project_id, **params})
            project = await other.call("project.get", {"project_id": project_id})
            assert project["state"] == "running"
            assert project["execution_id"] == started["execution_id"]
            # PAUSE/RESUME of the agent show in the project's state.
            await execution.pause()
            assert (await wait_for(client, "project.state", state="paused"))["project_id"]
            await execution.resume()
            killed = await other.call("agent.kill", {"project_id": project_id})
            assert killed["execution_id"] == started["execution_id"]
            result = await execution.wait(10)
            assert result.status == "cancelled"
            final = agent_result(result)
            assert final["status"] == "cancelled" and final["is_error"] is True
            assert final["session_id"] is not None  # from init
            with pytest.raises(errors.InvalidState):
                await other.call("agent.kill", {"project_id": project_id})
            project = await other.call("project.get", {"project_id": project_id})
            assert project["state"] == "idle" and project["last_status"] == "cancelled"
            _, after = await run_agent(client, project_id, "after", agent_env)
            assert after.status == "completed"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("prompt", "params", "status", "run_status", "reason"),
    [
        ("fake:error", {}, "failed", "failed", "fake: the scenario failed"),
        ("fake:crash", {}, "failed", "failed", "exited with code 1 without a result"),
        ("fake:noresult", {}, "completed", "failed", "exited with code 0 without a result"),
        ("fake:slow=30", {"timeout": 0.5}, "timed_out", "timed_out", "timed out"),
        ("fake:ignore-term", {"timeout": 0.5}, "timed_out", "timed_out", "timed out"),
        ("hi", {"max_turns": 1}, "failed", "failed", "maximum number of turns"),
    ],
)
def test_failure_scenarios(
    agent_server: RunningServer,
    agent_env: dict[str, str],
    prompt: str,
    params: dict[str, Any],
    status: str,
    run_status: str,
    reason: str,
) -> None:
    name = "fail-" + prompt.replace(":", "-").replace("=", "-") + str(len(params))
    path = new_project_dir(agent_server, name)

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, name, path)
            _, result = await run_agent(client, project_id, prompt, agent_env, **params)
            assert result.status == status
            final = agent_result(result)
            assert final["is_error"] is True and final["status"] == run_status
            assert any(reason in error for error in final["errors"]), final
            project = await client.call("project.get", {"project_id": project_id})
            assert project["state"] == "idle" and project["last_status"] == run_status
            kinds = [m["kind"] for m in await all_messages(client, project_id)]
            assert kinds[0] == "prompt" and kinds.count("result") == 1
            if prompt == "fake:crash":
                assert "fake crash" in " ".join(final["errors"])
                assert result.stdout.endswith('"te')  # the half line is in the transcript

    asyncio.run(main())


def test_five_megabyte_line(agent_server: RunningServer, agent_env: dict[str, str]) -> None:
    path = new_project_dir(agent_server, "bigline")

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, "bigline", path)
            _, result = await run_agent(client, project_id, "fake:bigline=5000000", agent_env)
            assert result.status == "completed"
            final = agent_result(result)
            assert final["status"] == "completed" and final["result"].startswith("Echo:")
            # Larger than a client's queue: the live event is a summary...
            big = [
                m["params"]
                for m in result.events
                if m["method"] == "agent.event" and m["params"].get("oversized")
            ]
            assert len(big) == 1 and big[0]["bytes"] > 5_000_000
            assert big[0]["event"]["type"] == "assistant"
            # ...and the whole event is in the history.
            messages = await all_messages(client, project_id)
            texts = [
                m["data"]["message"]["content"][0]["text"]
                for m in messages
                if m["kind"] == "event" and m["data"]["type"] == "assistant"
            ]
            assert [len(t) for t in texts] == [5_000_000]

    asyncio.run(main())


def test_agent_execute_refusals(agent_server: RunningServer, agent_env: dict[str, str]) -> None:
    path = new_project_dir(agent_server, "refusals")

    async def main() -> None:
        async with ExecutorClient(agent_server.url) as client:
            project_id = await create_project(client, "refusals", path)
            bad: list[tuple[dict[str, Any], type[errors.RpcError]]] = [
                ({"project_id": "missing", "prompt": "x"}, errors.NotFound),
                ({"project_id": project_id}, errors.InvalidParams),
                ({"project_id": project_id, "prompt": ""}, errors.InvalidParams),
                ({"project_id": project_id, "prompt": "a\0b"}, errors.InvalidParams),
                ({"project_id": project_id, "prompt": "x" * 200_000}, errors.InvalidParams),
                (
                    {"project_id": project_id, "prompt": "x", "model": "--evil"},
                    errors.InvalidParams,
                ),
                (
                    {"project_id": project_id, "prompt": "x", "allowed_tools": ["-x"]},
                    errors.InvalidParams,
                ),
                ({"project_id": project_id, "prompt": "x", "max_turns": 0}, errors.InvalidParams),
                ({"project_id": project_id, "prompt": "x", "bogus": 1}, errors.InvalidParams),
            ]
            for params, error in bad:
                with pytest.raises(error):
                    await client.call("agent.execute", params)
            with pytest.raises(errors.NotFound):
                await client.call("messages.get", {"project_id": "missing"})
            project = await client.call("project.get", {"project_id": project_id})
            assert project["runs"] == 0 and project["state"] == "idle"
            path.rmdir()
            with pytest.raises(errors.InvalidParams, match="no longer exists"):
                await client.call(
                    "agent.execute", {"project_id": project_id, "prompt": "x", "env": agent_env}
                )

    asyncio.run(main())


def test_slow_subscriber_loses_events_only_for_itself(
    make_server: Callable[..., RunningServer], tmp_path: Path, agent_env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    (root / "flood").mkdir(parents=True)
    server = make_server(shared.agent_settings(root, max_pending_bytes=1024 * 1024))
    count = 300

    async def main() -> None:
        async with ExecutorClient(server.url) as runner:
            project_id = await create_project(runner, "flood", root / "flood")
            # A subscriber that stops reading: tiny socket buffer, one frame queued.
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.setblocking(False)
            async with websockets.connect(
                server.url, sock=sock, max_queue=1, max_size=None, compression=None
            ) as slow:
                assert json.loads(await slow.recv())["method"] == "connected"
                request = {"project_id": project_id}
                await slow.send(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": 1,
                            "method": "project.subscribe",
                            "params": request,
                        }
                    )
                )
                assert json.loads(await slow.recv())["result"]["subscribed"] is True
                # The runner gets everything while the subscriber reads nothing.
                _, result = await run_agent(runner, project_id, f"fake:flood={count}", agent_env)
                assert result.dropped == 0 and result.status == "completed"
                indexes = [
                    m["params"]["index"] for m in result.events if m["method"] == "agent.event"
                ]
                assert indexes == list(range(1, count + 3))
                # Now the slow one reads: gaps, counted, but the lifecycle is whole.
                frames = []
                while not frames or frames[-1].get("method") != "process.completed":
                    frames.append(json.loads(await asyncio.wait_for(slow.recv(), 20)))
                methods = [f.get("method") for f in frames]
                assert methods.count("agent.result") == 1
                assert frames[-1]["params"]["dropped"] > 0
                seen = [f["params"]["index"] for f in frames if f.get("method") == "agent.event"]
                assert len(seen) < count + 2 and seen == sorted(seen)
            # Everything it missed is in the history.
            messages = await all_messages(runner, project_id)
            assert sum(m["kind"] == "event" for m in messages) == count + 2

    asyncio.run(main())


def test_allow_list_binds_agents_too(
    make_server: Callable[..., RunningServer], tmp_path: Path, agent_env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    (root / "p").mkdir(parents=True)
    running = make_server(shared.agent_settings(root, allowed_commands=["echo"]))

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            project_id = await create_project(client, "p", root / "p")
            with pytest.raises(errors.NotAllowed):
                await client.call(
                    "agent.execute", {"project_id": project_id, "prompt": "hi", "env": agent_env}
                )

    asyncio.run(main())
