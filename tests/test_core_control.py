"""PAUSE, RESUME, CANCEL and timeouts on whole process trees, with real signals."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from service.client import ExecutorClient
from service.process import procfs
from tests.utils import RunningServer, runner

run = runner(90)

PY = sys.executable

# A tree: a shell with three children, each printing a line every 20 ms.
TREE = "for i in 1 2 3; do (while true; do echo tick-$i; sleep 0.02; done) & done; wait"
# Ignores SIGTERM: only the ladder's SIGKILL ends it.
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\nwhile True: time.sleep(1)"


async def first_output(execution: Any) -> None:
    async for event in execution.events():
        if event["method"] == "process.output":
            return


def drain(execution: Any) -> list[dict[str, Any]]:
    """Take whatever notifications are already queued for ``execution``."""
    queue = execution.client._queue(execution.id)
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def test_pause_stops_the_whole_tree_then_resume(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sh", "-c", TREE], env=marker)
            await first_output(execution)
            await asyncio.sleep(0.1)
            # sh, three subshells, and whichever sleeps are running
            assert len(procfs.group_members(execution.pgid)) >= 4

            reply = await execution.pause()
            # The reply arrives only once every member of the group is stopped.
            members = procfs.group_members(execution.pgid)
            assert reply == {"status": "paused", "execution_id": execution.id}
            assert len(members) >= 4
            # Stopped as docs/protocol.md defines it: state T, or a vfork parent
            # in D with SIGSTOP pending (it cannot reach T until its child runs).
            assert all(procfs.is_stopped(m) for m in members), [(m.pid, m.state) for m in members]

            await asyncio.sleep(0.05)
            before = [e["method"] for e in drain(execution)]
            # Whatever was already in flight precedes process.paused ...
            assert "process.paused" in before
            tail = before[before.index("process.paused") + 1 :]
            assert tail == []
            # ... and nothing at all arrives while paused.
            await asyncio.sleep(0.5)
            assert drain(execution) == []
            assert (await execution.status())["state"] == "paused"

            assert (await execution.resume())["status"] == "resumed"
            await asyncio.sleep(0.3)
            after = [e["method"] for e in drain(execution)]
            assert after[0] == "process.resumed"
            assert "process.output" in after
            assert all(m.state not in "Tt" for m in procfs.group_members(execution.pgid))

            await execution.cancel()
            result = await execution.wait(15)
            assert result.status == "cancelled"
            assert not procfs.group_members(execution.pgid)

    run(main())


def test_cancel_runs_the_ladder_on_a_stubborn_process(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=[PY, "-c", STUBBORN], env=marker)
            await first_output(execution)
            started = time.monotonic()
            assert (await execution.cancel())["status"] == "cancelled"
            events = []
            async for event in execution.events():
                events.append(event)
            elapsed = time.monotonic() - started
            methods = [e["method"] for e in events]
            assert methods[0] == "process.cancelled" and methods[-1] == "process.completed"
            completed = events[-1]["params"]
            assert completed["status"] == "cancelled"
            assert completed["signal"] == 9  # SIGTERM was ignored; SIGKILL ended it
            assert elapsed >= 1.5  # the test server's kill_grace_s is 2

    run(main())


def test_cancel_while_paused(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sh", "-c", TREE], env=marker)
            await first_output(execution)
            await execution.pause()
            await execution.cancel()
            result = await execution.wait(15)
            assert result.status == "cancelled"
            assert result.signal == 15  # a stopped shell still gets SIGTERM, after SIGCONT

    run(main())


def test_leader_exit_takes_the_group_along(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            result = await client.run(
                argv=["sh", "-c", "sleep 300 & echo started"], env=marker, wait_timeout=15
            )
            assert result.status == "completed" and result.stdout == "started\n"

    run(main())


def test_timeout(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            started = time.monotonic()
            result = await client.run(
                argv=["sleep", "30"], timeout=0.5, env=marker, wait_timeout=15
            )
            assert result.status == "timed_out"
            assert result.signal == 15
            assert 0.4 < time.monotonic() - started < 5
            methods = [e["method"] for e in result.events]
            assert "process.cancelled" not in methods

    run(main())


def test_control_type_is_case_insensitive(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sleep", "30"], env=marker)
            assert (await client.call("control", {"type": "Pause"}))["status"] == "paused"
            assert (await client.call("control", {"type": "resume"}))["status"] == "resumed"
            assert (await client.call("control", {"type": "cancel"}))["status"] == "cancelled"
            await execution.wait(15)

    run(main())


WRITER = """
import os, sys
total = 0
block = b"y" * 16383 + b"\\n"
while True:
    total += os.write(1, block)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(total))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""


def test_leader_killed_while_paused_loses_no_output(
    server: RunningServer, marker: dict[str, str], tmp_path: Any
) -> None:
    count_file = tmp_path / "written"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=[PY, "-c", WRITER, str(count_file)], env=marker)
            await first_output(execution)
            await asyncio.sleep(0.2)
            await execution.pause()
            import os
            import signal

            killed = time.monotonic()
            os.kill(execution.pid, signal.SIGKILL)
            result = await execution.wait(15)
            assert time.monotonic() - killed < 1.5  # no wait on held readers
            assert result.signal == 9
            written = int(count_file.read_text())
            assert result.completed["stdout_bytes"] >= written

    run(main())
