"""No orphans: escaped daemons die with their execution, adopted zombies are
reaped, and a server killed with SIGKILL takes its direct children along."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from service.client import ExecutorClient
from service.process import procfs
from tests.utils import MARKER_NAME, RunningServer, marked_pids, run, wait_until, zombie_children


def marker_value(marker: dict[str, str]) -> str:
    return marker[MARKER_NAME]


def pids_by_cmdline(cmdline: str) -> list[int]:
    return [pid for pid in procfs.all_pids() if procfs.cmdline(pid) == cmdline]


# One orphaned by a double fork (its parent subshell exits at once), one escaped
# into its own session while its parent lives on.
DAEMONS = "(setsid sleep 61 &); setsid sleep 62 & echo up; sleep 60"


def test_double_forked_daemon_is_adopted_and_gone_after_cancel(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sh", "-c", DAEMONS], env=marker)
            value = marker_value(marker)

            def adopted_daemon() -> list[int]:
                # Up, and its parent subshell gone: the server is its subreaper.
                return [
                    p
                    for p in marked_pids(value)
                    if procfs.cmdline(p) == "sleep 61"
                    and (stat := procfs.read_stat(p)) is not None
                    and stat.ppid == server.pid
                ]

            daemon = wait_until(adopted_daemon, 5)
            assert len(daemon) == 1, "the double-forked daemon was adopted by the server"
            stat = procfs.read_stat(daemon[0])
            assert stat is not None
            assert stat.pgid != execution.pgid, "the daemon left the execution's group"
            await execution.cancel()
            result = await execution.wait(10)
            assert result.status == "cancelled"
            assert marked_pids(marker_value(marker)) == []
        # The escapees the ladder killed were the server's adopted children: reaped.
        assert wait_until(lambda: not zombie_children(server.pid), 3), zombie_children(server.pid)

    run(main())


def test_escaped_daemon_dies_when_its_leader_exits(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            started = time.monotonic()
            result = await client.run(
                argv=["sh", "-c", "(setsid sleep 63 &); echo leader done"],
                env=marker,
                wait_timeout=10,
            )
            assert result.status == "completed" and result.exit_code == 0
            assert result.stdout == "leader done\n"
            # The daemon held stdout; it was killed (SIGTERM) rather than waited for.
            assert time.monotonic() - started < 5
            assert marked_pids(marker_value(marker)) == []

    run(main())


def test_orphan_without_marker_is_killed_by_the_reaper(
    server: RunningServer, marker: dict[str, str]
) -> None:
    tag = f"{os.getpid() % 1000 + 64}.{time.monotonic_ns() % 100000}"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(
                argv=["sh", "-c", f"(env -i setsid sleep {tag} >/dev/null 2>&1 &); sleep 60"],
                env=marker,
            )
            hidden = wait_until(lambda: pids_by_cmdline(f"sleep {tag}"), 5)
            assert hidden, "the unmarked daemon started"
            # It carries no marker, so only the reaper's sweep can find it: two
            # sweeps (0.5 s apart) while the execution keeps running.
            gone = wait_until(lambda: not pids_by_cmdline(f"sleep {tag}"), 5)
            assert gone, f"unmarked orphan still alive: {pids_by_cmdline(f'sleep {tag}')}"
            assert (await execution.status())["state"] == "running"
            await execution.cancel()
            await execution.wait(10)

    try:
        run(main())
    finally:
        for pid in pids_by_cmdline(f"sleep {tag}"):
            os.kill(pid, signal.SIGKILL)
    server.wait_for_log(lambda e: e.get("message", "").startswith("killed an adopted orphan"))


def test_sigkill_of_the_server_kills_its_direct_children_within_a_second(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    running = make_server()

    async def main() -> list[int]:
        leaders = []
        async with ExecutorClient(running.url) as client:
            for argv in (["sleep", "60"], ["sh", "-c", "sleep 64; true"]):
                execution = await client.execute(argv=argv, env=marker)
                assert execution.pid is not None
                leaders.append(execution.pid)
            # Let the store's writer commit both executions before the crash.
            await asyncio.sleep(0.5)
        return leaders

    leaders = run(main())
    for pid in leaders:
        stat = procfs.read_stat(pid)
        assert stat is not None and stat.ppid == running.pid
    killed_at = time.monotonic()
    running.stop(signal.SIGKILL)

    def leaders_gone() -> bool:
        return all(
            (s := procfs.read_stat(pid)) is None or s.state in procfs.GONE_STATES for pid in leaders
        )

    assert wait_until(leaders_gone, 1.0, 0.01), "direct children outlived the server"
    assert time.monotonic() - killed_at < 1.0
    # The grandchild (sleep 64) was no direct child: it outlived the server,
    # reparented. The next start (same data directory) kills it in recovery.
    value = marker_value(marker)
    assert marked_pids(value), "the grandchild outlived the server, as expected"
    again = make_server(data_dir=running.data_dir)
    assert wait_until(lambda: not marked_pids(value), 5), marked_pids(value)
    again.wait_for_log(lambda e: e.get("message") == "execution lost by an earlier server process")


def test_reaping_adopted_zombies_never_steals_an_executions_exit_status(
    server: RunningServer, marker: dict[str, str]
) -> None:
    # One execution keeps producing orphans that exit at once (adopted zombies
    # for the reaper) while many short executions come and go: each of those
    # must still get its own exit status from the event loop.
    churn = "for i in $(seq 150); do (setsid sh -c 'exit 3' &); sleep 0.01; done"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            producer = await client.execute(argv=["sh", "-c", churn], env=marker)

            async def short(code: int) -> None:
                result = await client.run(argv=["sh", "-c", f"exit {code}"], env=marker)
                assert result.exit_code == code, result.completed

            for _ in range(5):
                await asyncio.gather(*(short(code) for code in range(8)))
            result = await producer.wait(20)
            assert result.status == "completed"
        assert wait_until(lambda: not zombie_children(server.pid), 3), zombie_children(server.pid)

    run(main())
    server.wait_for_log(lambda e: e.get("message") == "reaped an adopted process")
