"""After ``kill -9`` of the server, the record is honest: a project's
``last_status`` is its last run's (``lost``), and the transcript lacks at most
the documented gap of what a live client had already received
(docs/protocol.md, "What a crash can cost")."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from service.client import ExecutorClient
from service.store.recorder import FLUSH_INTERVAL_S
from tests.test_projects import agent_settings, create_project, run_agent
from tests.utils import RunningServer, run

#: The gap asserted, in seconds of output: the recorder's flush interval plus
#: the writer's commit, with a wide margin for a loaded test machine.
GAP_BOUND_S = FLUSH_INTERVAL_S + 1.5
PRODUCER = (
    "import sys, time\n"
    "for n in range(1, 100000):\n"
    "    sys.stdout.write(f'{n} {time.time():.6f}\\n'); sys.stdout.flush(); time.sleep(0.002)\n"
)


def test_last_status_is_the_last_runs_after_a_crash(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "p").mkdir(parents=True)
    data_dir = tmp_path / "data"
    server = make_server(agent_settings(root, kill_grace_s=1), data_dir=data_dir)
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake")}

    async def before() -> tuple[str, str]:
        async with ExecutorClient(server.url) as client:
            project_id = await create_project(client, "p", root / "p")
            _, done = await run_agent(client, project_id, "hello", env)
            assert done.status == "completed"
            project = await client.call("project.get", {"project_id": project_id})
            assert project["last_status"] == "completed"
            hanging = await client.call(
                "agent.execute",
                {"project_id": project_id, "prompt": "fake:hang", "env": env, "resume": False},
            )
            await client.call("executions.list", {})  # the new run's row is committed
            return project_id, hanging["execution_id"]

    project_id, lost_id = run(before())
    server.stop(signal.SIGKILL)
    again = make_server(agent_settings(root, kill_grace_s=1), data_dir=data_dir)

    async def after() -> None:
        async with ExecutorClient(again.url) as client:
            project = await client.call("project.get", {"project_id": project_id})
            assert project["last_status"] == "lost", project
            listing = await client.call("executions.list", {"limit": 1})
            assert listing["executions"][0]["execution_id"] == lost_id

    run(after())


def test_the_crash_gap_is_bounded(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = make_server(data_dir=data_dir)

    async def live() -> tuple[str, int, float]:
        """Read live output for a second, then kill -9 the server; the last
        line received (its number and the time it was printed)."""
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["python3", "-c", PRODUCER], env=marker)
            last = (0, 0.0)
            # A second from the first output on: the producer may start late
            # on a loaded machine (its cpu group's weight is low).
            started: float | None = None
            async for message in execution.events():
                if message["method"] != "process.output":
                    continue
                started = started or time.monotonic()
                line = message["params"]["data"].splitlines()[-1]
                number, stamp = line.split()
                last = (int(number), float(stamp))
                if time.monotonic() - started > 1.0:
                    server.proc.send_signal(signal.SIGKILL)
                    break
            return execution.id, *last

    execution_id, received, received_at = run(live())
    server.stop(signal.SIGKILL)
    again = make_server(data_dir=data_dir)

    async def stored() -> tuple[int, float]:
        async with ExecutorClient(again.url) as client:
            lines: list[str] = []
            since = 0
            while True:
                page = await client.call(
                    "transcript.get", {"execution_id": execution_id, "since_seq": since}
                )
                lines += [line for c in page["chunks"] for line in c["data"].splitlines()]
                since = page["next_since_seq"]
                if not page["more"]:
                    break
            assert lines, "not one line of a second of output was stored"
            number, stamp = lines[-1].split()
            assert [int(line.split()[0]) for line in lines] == list(range(1, int(number) + 1))
            return int(number), float(stamp)

    kept, kept_at = run(stored())
    gap_lines, gap_s = max(0, received - kept), max(0.0, received_at - kept_at)
    print(
        f"\ncrash gap: {gap_lines} lines, {gap_s * 1000:.0f} ms of output (bound {GAP_BOUND_S} s)"
    )
    assert gap_s <= GAP_BOUND_S, (gap_lines, gap_s)
