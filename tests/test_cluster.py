"""Several nodes on one PostgreSQL store: two real servers on loopback sharing a
real (throwaway) PostgreSQL, real child processes and real signals.

Attach from another node (no gap, no duplicate), PAUSE/RESUME/CANCEL and input
forwarded to the node that runs the execution (checked in /proc), the
cluster-wide project lock, a SIGKILLed node's executions marked lost by the
other within the lease and its leftovers killed when it restarts, and
``execute`` on a named node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.client import ExecutorClient, RemoteExecution
from service.client.postgres import PostgresServer
from service.cluster.identity import default_node_id
from service.errors import RpcError
from service.process import procfs
from tests.test_projects import FAKE_CLAUDE, create_project
from tests.utils import (
    RunningServer,
    marked_pids,
    new_marker,
    serve_stopping,
    start_server,
    wait_no_marked,
)

PY = sys.executable
#: Prints ``line-1`` ... ``line-N``, one every 10 ms.
COUNT = "import sys, time\nfor i in range(1, {n} + 1):\n    print(f'line-{{i}}', flush=True)\n    time.sleep(0.01)"
TREE = "for i in 1 2 3; do (while true; do echo tick-$i; sleep 0.02; done) & done; wait"
LEASE_S = 2.0


def run(coro: Any, timeout: float = 90) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def node_settings(url: str, node_id: str, root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "store_url": url,
        "node_id": node_id,
        "node_lease_s": LEASE_S,
        "cluster_remote_execute": True,
        "claude_bin": FAKE_CLAUDE,
        "project_roots": [str(root)],
        "kill_grace_s": 1,
        **extra,
    }


@pytest.fixture(scope="module")
def pair(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Nodes A and B, one database, for the whole module."""
    url = pg_server.create_database()
    base = tmp_path_factory.mktemp("cluster")
    (base / "root").mkdir()
    nodes = []
    for name in ("A", "B"):
        (base / name).mkdir()
        # A longer lease than the SIGKILL test's: the timeout test stalls A for 1.3 s.
        settings = node_settings(url, name, base / "root", node_lease_s=4)
        nodes.append(start_server(base / name, {**settings, "cluster_request_timeout_s": 1}))
    nodes[0].root = base / "root"  # type: ignore[attr-defined]
    yield nodes[0], nodes[1]
    for node in nodes:
        node.stop()
    pg_server.drop_database(url.rsplit("/", 1)[1])


def health(server: RunningServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.http_url + "/health", timeout=10) as response:
        document: dict[str, Any] = json.load(response)
    return document


def metrics(server: RunningServer) -> str:
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


async def first_output(execution: RemoteExecution) -> None:
    async for event in execution.events():
        if event["method"] == "process.output":
            return


async def in_store(client: ExecutorClient, execution_id: str) -> None:
    """Wait until ``client``'s node finds the execution in the shared store."""
    for _ in range(200):
        with contextlib.suppress(RpcError):  # not there yet: -32003
            status = await client.call("status", {"execution_id": execution_id})
            if status["state"] == "running":
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the execution never reached the store")


def project_states(client: ExecutorClient) -> list[tuple[str, str | None]]:
    """The ``project.state`` notifications ``client`` has received so far: (state, node)."""
    states = []
    while not client.notifications.empty():
        note = client.notifications.get_nowait()
        if note["method"] == "project.state":
            states.append((note["params"]["state"], note["params"].get("node")))
    return states


async def collect(execution: RemoteExecution) -> list[dict[str, Any]]:
    """Every notification of ``execution`` up to ``process.completed``."""
    events = []
    async for event in execution.events():
        events.append(event)
        if event["method"] == "process.completed":
            break
    return events


def test_attach_from_another_node_mid_stream_has_no_gap_and_no_duplicate(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str]
) -> None:
    a, b = pair

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
            started = await on_a.execute(argv=[PY, "-c", COUNT.format(n=300)], env=marker)
            await first_output(started)
            await asyncio.sleep(0.5)  # mid-stream: about half of it is out
            attached = await on_b.attach(started.id)
            assert attached.info["node"] == "A" and attached.info["status"] == "attached"
            assert 0 < attached.info["last_seq"]
            events = await collect(attached)
            # The store answers for the cluster: B lists A's execution and its transcript.
            listed = await on_b.call("executions.list", {"limit": 50})
            row = next(r for r in listed["executions"] if r["execution_id"] == started.id)
            assert row["node"] == "A"
            # ... and one node's, when asked.
            only_a = await on_b.call("executions.list", {"limit": 500, "node": "A"})
            only_b = await on_b.call("executions.list", {"limit": 500, "node": "B"})
            assert started.id in {r["execution_id"] for r in only_a["executions"]}
            assert {r["node"] for r in only_a["executions"]} == {"A"}
            assert started.id not in {r["execution_id"] for r in only_b["executions"]}
            page = await on_b.call("transcript.get", {"execution_id": started.id})
            assert page["chunks"][0]["seq"] == 1 and page["chunks"][0]["data"].startswith(
                "line-1\n"
            )
            # The cluster view on B shows both nodes, with their leases.
            view = health(b)["cluster"]
            assert view["node"] == "B" and view["shared"] and view["bus"]["connected"]
            assert {n["node"]: n["state"] for n in view["nodes"]} == {"A": "up", "B": "up"}
            assert all(0 < n["lease_left_s"] <= 4 for n in view["nodes"])

        outputs = [e["params"] for e in events if e["method"] == "process.output"]
        seqs = [o["seq"] for o in outputs]
        assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate in seq"
        lines = "".join(o["data"] for o in outputs).splitlines()
        assert lines == [f"line-{i}" for i in range(1, 301)]
        # The same frames as on one node: output params, then process.completed.
        assert set(outputs[0]) == {"execution_id", "type", "data", "seq"}
        completed = events[-1]["params"]
        assert events[-1]["method"] == "process.completed"
        assert completed["status"] == "completed" and completed["exit_code"] == 0
        assert completed["stdout_bytes"] == sum(len(line) + 1 for line in lines)

    run(main())


def test_cancel_through_another_node_is_announced_there_before_completed(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str]
) -> None:
    a, b = pair

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
            started = await on_a.execute(argv=["sh", "-c", TREE], env=marker)
            await first_output(started)
            attached = await on_b.attach(started.id)
            await first_output(attached)
            reply = await on_b.call("control", {"type": "CANCEL", "execution_id": started.id})
            assert reply["status"] == "cancelled"
            events = await collect(attached)
            methods = [e["method"] for e in events if e["method"] != "process.output"]
            assert methods == ["process.cancelled", "process.completed"], methods
            assert events[-1]["params"]["status"] == "cancelled"
            await started.wait(15)

    run(main())


def test_pause_resume_cancel_and_input_from_another_node(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str]
) -> None:
    a, b = pair

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
            execution = await on_a.execute(argv=["sh", "-c", TREE], env=marker)
            await first_output(execution)
            await in_store(on_b, execution.id)  # B knows it once A committed its row
            await asyncio.sleep(0.1)
            assert len(procfs.group_members(execution.pgid)) >= 4
            ask = {"execution_id": execution.id}

            reply = await on_b.call("control", {"type": "PAUSE", **ask})
            # Answered by A once every member of A's group is stopped.
            members = procfs.group_members(execution.pgid)
            assert reply == {"status": "paused", "execution_id": execution.id}
            assert all(procfs.is_stopped(m) for m in members), [(m.pid, m.state) for m in members]
            with pytest.raises(RpcError) as refused:
                await on_b.call("control", {"type": "PAUSE", **ask})
            assert refused.value.code == -32005  # A's answer: already paused

            reply = await on_b.call("control", {"type": "resume", **ask})
            assert reply["status"] == "resumed"
            await asyncio.sleep(0.1)
            assert all(m.state not in "Tt" for m in procfs.group_members(execution.pgid))

            reply = await on_b.call("control", {"type": "CANCEL", **ask})
            assert reply["status"] == "cancelled"
            result = await execution.wait(15)
            assert result.status == "cancelled"
            assert not procfs.group_members(execution.pgid)
            # Finished: control from B is refused, with the state the store has.
            await asyncio.sleep(0.3)
            with pytest.raises(RpcError) as finished:
                await on_b.call("control", {"type": "PAUSE", **ask})
            assert finished.value.code == -32005

            # A stalled node: no answer in time is -32004 NODE_TIMEOUT, and the
            # request, arriving late, is dropped rather than acted on.
            ticker = await on_a.execute(argv=["sh", "-c", TREE], env=marker)
            await first_output(ticker)
            await in_store(on_b, ticker.id)  # B knows where it runs
            os.kill(a.pid, signal.SIGSTOP)
            try:
                with pytest.raises(RpcError) as silent:
                    await on_b.call("control", {"type": "PAUSE", "execution_id": ticker.id})
            finally:
                os.kill(a.pid, signal.SIGCONT)
            assert silent.value.code == -32004 and silent.value.error_name == "NODE_TIMEOUT"
            await asyncio.sleep(0.5)
            assert not any(procfs.is_stopped(m) for m in procfs.group_members(ticker.pgid))
            await ticker.cancel()
            await ticker.wait(15)

            # input forwarded to A's child, its output read on A.
            cat = await on_a.execute(argv=["cat"], stdin=True, env=marker)
            await in_store(on_b, cat.id)
            written = await on_b.call(
                "input", {"execution_id": cat.id, "data": "from B\n", "eof": True}
            )
            assert written == {"written": 7}
            done = await cat.wait(15)
            assert done.stdout == "from B\n" and done.status == "completed"
            # status {id} answers for the cluster, from the store (as of A's
            # last committed write: a moment behind process.completed).
            for _ in range(40):
                status = await on_b.call("status", {"execution_id": cat.id})
                if status["state"] != "running":
                    break
                await asyncio.sleep(0.05)
            assert status["node"] == "A" and status["state"] == "completed"

    run(main())


def test_project_agent_is_refused_on_the_other_node_and_relayed_to_its_subscribers(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    a, b = pair
    path = a.root / "locked"  # type: ignore[attr-defined]
    path.mkdir()
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake-claude")}

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
            # Created through A, after B loaded its registry: projects are global.
            project_id = await create_project(on_a, "locked", path)
            subscribed = await on_b.call("project.subscribe", {"project_id": project_id})
            assert subscribed["subscribed"] is True
            slow = {"project_id": project_id, "prompt": "fake:slow=2 work", "env": env}
            started = await on_a.call("agent.execute", slow)
            with pytest.raises(RpcError) as refused:
                await on_b.call("agent.execute", {**slow, "prompt": "second"})
            assert refused.value.code == -32005
            assert refused.value.data["node"] == "A"
            assert refused.value.data["execution_id"] == started["execution_id"]
            await RemoteExecution(on_a, started["execution_id"], started).wait(30)
            # B's subscriber heard the run on A: its state, its events, one
            # agent.result, then process.completed.
            relayed = await RemoteExecution(on_b, started["execution_id"], {}).wait(30)
            methods = [m["method"] for m in relayed.events]
            assert "agent.event" in methods and methods.count("agent.result") == 1, methods
            assert methods[-1] == "process.completed"
            assert methods.index("agent.result") < methods.index("process.completed")
            result = next(m["params"] for m in relayed.events if m["method"] == "agent.result")
            assert result["is_error"] is False and result["project_id"] == project_id
            assert project_states(on_b) == [("running", "A"), ("idle", "A")]
            # Freed when the agent ended: B may run one now.
            await asyncio.sleep(0.3)
            again = await on_b.call("agent.execute", {**slow, "prompt": "fake:success"})
            # B resumes the Claude session A's run left (projects are global).
            assert again["resumed_session_id"] == result["session_id"] is not None
            result = await RemoteExecution(on_b, again["execution_id"], again).wait(30)
            assert result.status == "completed"
            # agent.kill through A ends the agent that runs on B.
            await asyncio.sleep(0.3)
            third = await on_b.call("agent.execute", {**slow, "prompt": "fake:slow=20 long"})
            await in_store(on_a, third["execution_id"])
            killed = await on_a.call("agent.kill", {"project_id": project_id})
            assert killed == {
                "status": "cancelled",
                "execution_id": third["execution_id"],
                "project_id": project_id,
            }
            ended = await RemoteExecution(on_b, third["execution_id"], third).wait(30)
            assert ended.status == "cancelled"

    run(main())


def test_a_subscriber_on_another_node_hears_a_run_already_going_on(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    """B subscribes while the agent runs on A: from then on, as on A."""
    a, b = pair
    path = a.root / "late"  # type: ignore[attr-defined]
    path.mkdir()
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake-claude")}

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
            project_id = await create_project(on_a, "late", path)
            prompt = {"project_id": project_id, "prompt": "fake:slow=3 work", "env": env}
            started = await on_a.call("agent.execute", prompt)
            execution_id = started["execution_id"]
            # The run's `init` line is out and stored before B subscribes.
            for _ in range(200):
                with contextlib.suppress(RpcError):
                    status = await on_b.call("status", {"execution_id": execution_id})
                    if status["last_seq"] >= 1:
                        break
                await asyncio.sleep(0.05)
            before = status["last_seq"]
            assert before >= 1
            await on_b.call("project.subscribe", {"project_id": project_id})
            relayed = await RemoteExecution(on_b, execution_id, {}).wait(30)
            methods = [m["method"] for m in relayed.events]
            assert methods.count("agent.result") == 1 and methods[-1] == "process.completed"
            # Nothing printed before the subscribe is sent; the event indexes
            # go on from those of the events before it, as on A.
            seqs = [m["params"]["seq"] for m in relayed.events if m["method"] == "process.output"]
            assert seqs and min(seqs) > before, (before, seqs)
            indexes = [m["params"]["index"] for m in relayed.events if m["method"] == "agent.event"]
            assert (
                indexes
                and indexes[0] > 1
                and indexes == list(range(indexes[0], indexes[0] + len(indexes)))
            )
            result = next(m["params"] for m in relayed.events if m["method"] == "agent.result")
            assert result["is_error"] is False
            assert project_states(on_b) == [("running", "A"), ("idle", "A")]

    run(main())


def test_control_reaches_a_node_that_joined_since_the_last_heartbeat(
    pg_url: str, tmp_path: Path, marker: dict[str, str]
) -> None:
    """A long lease (heartbeats 10 s apart): A has not heard of B when B's
    execution is controlled through A; A reads the nodes then, not -32005."""
    root = tmp_path / "root"
    root.mkdir()
    nodes = []
    try:
        for name in ("A", "B"):
            (tmp_path / name).mkdir()
            settings = node_settings(pg_url, name, root, node_lease_s=30)
            nodes.append(start_server(tmp_path / name, settings))
        a, b = nodes

        async def main() -> None:
            async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
                assert [n["node"] for n in health(a)["cluster"]["nodes"]] == ["A"]
                execution = await on_b.execute(argv=["sleep", "30"], env=marker)
                await in_store(on_a, execution.id)
                reply = await on_a.call("control", {"type": "CANCEL", "execution_id": execution.id})
                assert reply["status"] == "cancelled"
                assert (await execution.wait(15)).status == "cancelled"

        run(main())
    finally:
        for node in nodes:
            node.stop()


def test_projects_are_one_list_on_every_node(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    """Created on A: listed on B. Deleted on A: gone from B's list, and B's
    subscriber told at once. A project whose agent runs on A cannot be
    deleted, nor its session reset, through B."""
    a, b = pair
    root = a.root  # type: ignore[attr-defined]
    (root / "listed").mkdir()
    (root / "busy").mkdir()
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake-claude")}

    async def names(client: ExecutorClient) -> set[str]:
        listed = await client.call("project.list", {})
        return {project["name"] for project in listed["projects"]}

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
            await names(on_b)  # B's registry is loaded before A creates
            listed = await create_project(on_a, "listed", root / "listed")
            assert "listed" in await names(on_b)
            with pytest.raises(RpcError) as taken:  # the name is the cluster's
                await on_b.call("project.create", {"name": "listed", "path": str(root / "busy")})
            assert taken.value.code == -32602
            await on_b.call("project.subscribe", {"project_id": listed})
            await on_a.call("project.delete", {"project_id": listed})
            deleted = await asyncio.wait_for(on_b.notifications.get(), 10)
            assert deleted["method"] == "project.state"
            assert deleted["params"]["state"] == "deleted"
            assert deleted["params"]["project_id"] == listed
            assert "listed" not in await names(on_b)

            busy = await create_project(on_a, "busy", root / "busy")
            slow = {"project_id": busy, "prompt": "fake:slow=20 work", "env": env}
            started = await on_a.call("agent.execute", slow)
            for method in ("project.delete", "agent.new_session"):
                with pytest.raises(RpcError) as refused:
                    await on_b.call(method, {"project_id": busy})
                assert refused.value.code == -32005, method
                assert refused.value.data["node"] == "A"
            await on_a.call("agent.kill", {"project_id": busy})
            await RemoteExecution(on_a, started["execution_id"], started).wait(30)
            await asyncio.sleep(0.3)  # A frees the project as the agent ends
            await on_b.call("project.delete", {"project_id": busy})
            assert "busy" not in await names(on_a)

    run(main())


def test_execute_on_a_named_node(
    pair: tuple[RunningServer, RunningServer], marker: dict[str, str]
) -> None:
    a, b = pair

    async def main() -> None:
        async with ExecutorClient(a.url) as on_a:
            assert "execute.node" in on_a.capabilities
            started = await on_a.call(
                "execute", {"argv": [PY, "-c", COUNT.format(n=50)], "env": marker, "node": "B"}
            )
            assert started["node"] == "B" and started["status"] == "started"
            # B's child: B's server is its parent (or its exec shim's).
            parents = {b.pid, *procfs_children(b.pid)}
            assert procfs_ppid(started["pid"]) in parents
            result = await RemoteExecution(on_a, started["execution_id"], started).wait(30)
            assert result.status == "completed"
            assert result.stdout.splitlines() == [f"line-{i}" for i in range(1, 51)]
            for node, code in (("nowhere", -32602), ("A", None)):
                if code is None:
                    local = await on_a.call("execute", {"argv": ["true"], "node": node})
                    assert "node" not in local  # this node: the ordinary path
                    continue
                with pytest.raises(RpcError) as unknown:
                    await on_a.call("execute", {"argv": ["true"], "node": node})
                assert unknown.value.code == code and "unknown" in unknown.value.message

    run(main())


def procfs_ppid(pid: int) -> int:
    stat = procfs.read_stat(pid)
    assert stat is not None
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def procfs_children(pid: int) -> list[int]:
    return [p for p in procfs.all_pids() if _ppid_or_none(p) == pid]


def _ppid_or_none(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_sigkilled_node_is_declared_dead_and_its_restart_kills_what_it_left(
    pg_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    settings = {"a": node_settings(pg_url, "A", root), "b": node_settings(pg_url, "B", root)}
    for name in settings:
        (tmp_path / name).mkdir()
    a = start_server(tmp_path / "a", settings["a"])
    b = start_server(tmp_path / "b", settings["b"])
    value, marker = new_marker()
    try:

        async def start_on_a() -> str:
            async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
                # A grandchild that outlives the shell when A dies.
                execution = await on_a.execute(argv=["sh", "-c", "sleep 300 & wait"], env=marker)
                await in_store(on_b, execution.id)
                return execution.id

        execution_id = run(start_on_a())
        assert marked_pids(value)
        a.stop(signal.SIGKILL)
        killed_at = time.monotonic()

        async def wait_lost() -> dict[str, Any]:
            async with ExecutorClient(b.url) as on_b:
                while True:
                    status = await on_b.call("status", {"execution_id": execution_id})
                    if status["state"] == "lost":
                        return status
                    await asyncio.sleep(0.1)

        status = run(wait_lost(), timeout=4 * LEASE_S)
        # Within the lease plus one sweep interval (a third of it), with a margin.
        assert time.monotonic() - killed_at < 2 * LEASE_S + 1
        assert "node A's lease expired" in status["reason"]
        view = {n["node"]: n for n in health(b)["cluster"]["nodes"]}
        assert view["A"]["state"] == "dead"

        # The grandchild is still there (A's machine lives on); A's restart ends it.
        assert marked_pids(value)
        a = start_server(tmp_path / "a", settings["a"])
        assert not wait_no_marked(value, timeout=10)
        joined = a.wait_for_log(lambda e: e.get("message") == "joined the cluster")
        assert joined["previous_state"] == "dead" and joined["leftovers_killed"] >= 1
    finally:
        a.stop()
        b.stop()
        for pid in marked_pids(value):
            os.kill(pid, signal.SIGKILL)


def test_default_node_id_is_stable_and_independent_of_the_port(tmp_path: Path) -> None:
    first = default_node_id(tmp_path / "data", hostname="box")
    assert first == default_node_id(tmp_path / "data", hostname="box")
    assert first.startswith("box-") and len(first) == len("box-") + 8
    assert default_node_id(tmp_path / "other", hostname="box") != first


@pytest.mark.parametrize("value", ["0", "0.5", "301", "ten"])
def test_a_bad_lease_exits_2_with_one_line(value: str, tmp_path: Path) -> None:
    done = serve_stopping(tmp_path, {"CC_EXECUTOR_NODE_LEASE_S": value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CC_EXECUTOR_NODE_LEASE_S" in lines[0], done.stderr


def test_a_server_alone_is_a_node_of_its_own(server: RunningServer) -> None:
    """SQLite: the same node row and lease, no bus, nothing remote."""
    view = health(server)["cluster"]
    assert view["shared"] is False and view["bus"] is None
    assert [n["state"] for n in view["nodes"]] == ["up"]
    scrape = metrics(server)
    assert 'cc_executor_cluster_nodes{state="up"} 1.0' in scrape
    assert "cc_executor_cluster_bus_connected 0.0" in scrape

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            assert "execute.node" not in client.capabilities
            with pytest.raises(RpcError) as refused:
                await client.call("execute", {"argv": ["true"], "node": "elsewhere"})
            assert refused.value.code == -32602
            assert refused.value.error_name == "NODE_NOT_ALLOWED"

    run(main())


def test_a_dead_node_is_declared_exactly_once_when_nodes_race(pg_url: str, tmp_path: Path) -> None:
    """Two nodes sweep at the same instant: one declares, one finds nothing."""
    import psycopg

    from service.cluster import nodes
    from service.cluster.schema import CLUSTER_MIGRATIONS, CLUSTER_NAMESPACE
    from service.settings import Settings
    from service.store import make_store
    from service.store.postgres import PgConnection
    from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE

    async def prepare() -> None:
        store = make_store(Settings(data_dir=tmp_path, store_url=pg_url))
        store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
        store.register_schema(CLUSTER_NAMESPACE, CLUSTER_MIGRATIONS)
        await store.open()
        gone = time.time() - 60

        def rows(conn: Any) -> None:
            conn.execute(
                "INSERT INTO nodes (id, state, host, pid, server_id, started_at, heartbeat_at, "
                "lease_s, expires_at) VALUES ('gone', 'up', 'h', 1, 's', ?, ?, 2, ?)",
                (gone, gone, gone + 2),
            )
            for n, state in enumerate(("running", "paused", "completed")):
                conn.execute(
                    "INSERT INTO executions (id, server_id, argv, state, created_at, updated_at, "
                    "node) VALUES (?, 's', '[]', ?, ?, ?, 'gone')",
                    (f"e{n}", state, gone, gone),
                )

        await store.write(rows)
        await store.close()

    run(prepare())
    listener = psycopg.connect(pg_url, autocommit=True)
    listener.execute("LISTEN cc_state")
    barrier = threading.Barrier(2)
    declared: list[list[nodes.Death]] = []

    def sweep(name: str) -> None:
        me = nodes.Me(name, "h", 1, name, 2.0, 10)
        with psycopg.connect(pg_url) as raw:
            conn = PgConnection(raw)
            barrier.wait(10)
            found = nodes.sweep(
                conn, me, time.time(), lambda c, ch, p: c.execute("SELECT pg_notify(?, ?)", (ch, p))
            )
            raw.commit()
            declared.append(found)

    threads = [threading.Thread(target=sweep, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    deaths = [death for found in declared for death in found]
    assert len(declared) == 2 and len(deaths) == 1
    assert sorted(deaths[0].executions) == ["e0", "e1"]
    with psycopg.connect(pg_url) as check:
        states = dict(check.execute("SELECT id, state FROM executions ORDER BY id").fetchall())
        assert states == {"e0": "lost", "e1": "lost", "e2": "completed"}
        reasons = {
            r for (r,) in check.execute("SELECT reason FROM executions WHERE state = 'lost'")
        }
        assert len(reasons) == 1 and "node gone's lease expired" in reasons.pop()
        left = check.execute("SELECT count(*) FROM lost_leftovers WHERE node = 'gone'").fetchone()
        assert left == (2,)
    notes = [n.payload for n in listener.notifies(timeout=1.0)]
    listener.close()
    assert sorted(notes) == ["e0:lost", "e1:lost"]


def test_a_database_outage_longer_than_the_lease_declares_no_node_dead(
    pg_server: PostgresServer, pg_url: str, tmp_path: Path, marker: dict[str, str]
) -> None:
    """PostgreSQL away for longer than the lease: nobody could renew, so when
    it is back nobody is declared dead (each node first renews for a whole
    lease); the bus reconnects; executions never stopped."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_server(tmp_path / "a", node_settings(pg_url, "A", tmp_path))
    b = start_server(tmp_path / "b", node_settings(pg_url, "B", tmp_path))
    try:

        async def start_on_a() -> tuple[str, int]:
            async with ExecutorClient(a.url) as on_a:
                execution = await on_a.execute(argv=["sleep", "60"], env=marker)
                await in_store(on_a, execution.id)
                assert execution.pgid is not None
                return execution.id, execution.pgid

        execution_id, pgid = run(start_on_a())
        assert health(a)["cluster"]["bus"]["connected"] is True
        pg_server.stop()
        deadline = time.monotonic() + 15
        while health(a)["cluster"]["bus"]["connected"]:
            assert time.monotonic() < deadline, "the bus never noticed the database left"
            time.sleep(0.1)
        document = health(a)
        assert document["status"] in ("degraded", "failing")
        assert any("cluster bus" in reason for reason in document["reasons"])
        time.sleep(1.5 * LEASE_S)  # every lease in the table has expired by now
        pg_server.start()
        deadline = time.monotonic() + 30
        while not all(health(n)["cluster"]["bus"]["connected"] for n in (a, b)):
            assert time.monotonic() < deadline, "the bus never reconnected"
            time.sleep(0.1)
        time.sleep(2 * LEASE_S)  # time enough for a sweep to (wrongly) declare someone
        for node in (a, b):
            view = health(node)["cluster"]
            assert {n["node"]: n["state"] for n in view["nodes"]} == {"A": "up", "B": "up"}
            assert view["declared_dead"] == 0 and view["bus"]["losses"] >= 1
            assert "declared a node dead; its live executions are lost" not in node.log_messages()
        assert procfs.group_members(pgid), "the execution stopped"
        scrape = metrics(a)
        assert "cc_executor_cluster_bus_connected 1.0" in scrape
        assert "cc_executor_cluster_bus_losses_total 0.0" not in scrape
        a.wait_for_log(lambda e: e.get("message") == "bus reconnected", timeout=5)

        async def control_from_b() -> None:
            # The first requests between the nodes since the database came
            # back: each side's notifying connection is stale, and replaced.
            async with ExecutorClient(b.url) as on_b:
                ask = {"execution_id": execution_id}
                paused = await on_b.call("control", {"type": "PAUSE", **ask})
                assert paused["status"] == "paused"
                cancelled = await on_b.call("control", {"type": "CANCEL", **ask})
                assert cancelled["status"] == "cancelled"

        run(control_from_b())
    finally:
        if not pg_server.running:
            pg_server.start()
        a.stop()
        b.stop()
    assert execution_id


def test_a_stalled_node_declared_dead_ends_its_executions_and_rejoins(
    pg_url: str, tmp_path: Path, marker: dict[str, str]
) -> None:
    """SIGSTOP node A past its lease: B declares it dead and reports its
    execution lost; when A runs again it finds out, cancels what it runs (the
    cluster was told it is gone) and joins again."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_server(tmp_path / "a", node_settings(pg_url, "A", root))
    b = start_server(tmp_path / "b", node_settings(pg_url, "B", root))
    try:

        async def main() -> None:
            async with ExecutorClient(a.url) as on_a, ExecutorClient(b.url) as on_b:
                execution = await on_a.execute(argv=["sh", "-c", TREE], env=marker)
                await first_output(execution)
                await in_store(on_b, execution.id)
                os.kill(a.pid, signal.SIGSTOP)
                try:
                    deadline = time.monotonic() + 4 * LEASE_S
                    while True:
                        status = await on_b.call("status", {"execution_id": execution.id})
                        if status["state"] == "lost":
                            break
                        assert time.monotonic() < deadline, status
                        await asyncio.sleep(0.1)
                finally:
                    os.kill(a.pid, signal.SIGCONT)
                result = await execution.wait(20)
                assert result.status == "cancelled"
                assert not procfs.group_members(execution.pgid)
                a.wait_for_log(
                    lambda e: e.get("message", "").startswith("this node was declared dead"),
                    timeout=10,
                )
                deadline = time.monotonic() + 4 * LEASE_S
                while {n["node"]: n["state"] for n in health(b)["cluster"]["nodes"]}["A"] != "up":
                    assert time.monotonic() < deadline, "A never joined again"
                    await asyncio.sleep(0.1)

        run(main())
    finally:
        a.stop()
        b.stop()
