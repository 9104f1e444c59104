"""Containment on both backends: cgroup v2 (where this machine offers a writable
cgroup2 hierarchy) and process groups (forced by ``cgroup_root=off``; runs
everywhere). Real servers, real process trees, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.client import ExecutorClient, RemoteExecution
from service.process import procfs
from service.process.containment import resolve_root, subtree_name
from service.store.database import DB_NAME
from tests.utils import MARKER_NAME, RunningServer, marked_pids

CGROUP_ROOT = resolve_root("auto")
BACKENDS = [
    pytest.param(
        "auto",
        id="cgroup",
        marks=pytest.mark.skipif(
            CGROUP_ROOT is None, reason="no writable cgroup2 hierarchy on this machine"
        ),
    ),
    pytest.param("off", id="process-group"),
]
EXPECTED = {"auto": "cgroup", "off": "process-group"}


def run(coro: Any, timeout: float = 90) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def health(server: RunningServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.http_url + "/health", timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def subtree(server: RunningServer) -> Path | None:
    if CGROUP_ROOT is None:
        return None
    return Path(CGROUP_ROOT) / subtree_name(server.data_dir)


def leaves(server: RunningServer) -> list[str]:
    path = subtree(server)
    if path is None or not path.is_dir():
        return []
    return sorted(entry.name for entry in path.iterdir() if entry.is_dir())


def children_of(pid: int, states: str) -> list[int]:
    return [
        s.pid
        for s in map(procfs.read_stat, procfs.all_pids())
        if s is not None and s.ppid == pid and s.state in states
    ]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def test_health_names_the_backend(make_server: Any, backend: str) -> None:
    server = make_server({"cgroup_root": backend})
    assert health(server)["containment"] == EXPECTED[backend]


async def next_output(execution: RemoteExecution, within_s: float) -> dict[str, Any] | None:
    """The next process.output of ``execution`` within ``within_s``, else None."""
    queue = execution.client._queue(execution.id)
    deadline = time.monotonic() + within_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(queue.get(), remaining)
        except TimeoutError:
            return None
        if message is not None and message["method"] == "process.output":
            return message
    return None


async def drain(execution: RemoteExecution) -> None:
    queue = execution.client._queue(execution.id)
    while not queue.empty():
        queue.get_nowait()


# A daemon in its own session that prints through the execution's stdout.
SETSID_PRINTER = "setsid sh -c 'while :; do echo tick; sleep 0.05; done' & wait"


def test_setsid_daemon_pauses_resumes_and_dies(
    make_server: Any, backend: str, marker: dict[str, str]
) -> None:
    server = make_server({"cgroup_root": backend})

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sh", "-c", SETSID_PRINTER], env=marker)
            assert await next_output(execution, 5) is not None, "the daemon prints"
            # The daemon left the leader's process group.
            value = marker[MARKER_NAME]
            escaped = wait_until(
                lambda: [
                    p
                    for p in marked_pids(value)
                    if (s := procfs.read_stat(p)) is not None and s.pgid != execution.pgid
                ],
                5,
            )
            assert escaped, "a member left the execution's process group"
            await execution.pause()
            for pid in marked_pids(value):
                stat = procfs.read_stat(pid)
                assert stat is None or procfs.is_stopped(stat), (pid, stat)
            await drain(execution)
            assert await next_output(execution, 0.6) is None, "silent while paused"
            await execution.resume()
            assert await next_output(execution, 5) is not None, "prints again after RESUME"
            await execution.cancel()
            result = await execution.wait(15)
            assert result.status == "cancelled"
            assert marked_pids(value) == []

    run(main())
    assert wait_until(lambda: not leaves(server), 5), leaves(server)


def test_double_forked_daemon_dies_with_its_execution(
    make_server: Any, backend: str, marker: dict[str, str]
) -> None:
    server = make_server({"cgroup_root": backend})

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            started = time.monotonic()
            result = await client.run(
                argv=["sh", "-c", "(sh -c 'sleep 64' &) ; echo leader done"],
                env=marker,
                wait_timeout=15,
            )
            assert result.status == "completed" and result.stdout == "leader done\n"
            assert time.monotonic() - started < 8
            assert marked_pids(marker[MARKER_NAME]) == []

    run(main())
    assert wait_until(lambda: not leaves(server), 5), leaves(server)
    assert wait_until(lambda: not children_of(server.pid, "Z"), 3)


def recorded(data_dir: Path, execution_id: str) -> bool:
    """Whether the store on disk holds the execution with its pid."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True, timeout=1)
        ) as conn:
            row = conn.execute(
                "SELECT pid FROM executions WHERE id = ?", (execution_id,)
            ).fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] is not None


def test_server_sigkill_then_restart_kills_leftovers(
    make_server: Any, backend: str, marker: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "kept"
    server = make_server({"cgroup_root": backend}, data_dir=data_dir)
    value = marker[MARKER_NAME]

    async def start() -> str:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(
                argv=["sh", "-c", "(setsid sleep 65 &); trap '' TERM; sleep 66"], env=marker
            )
            assert wait_until(lambda: len(marked_pids(value)) >= 2, 5)
            return execution.id

    execution_id = run(start())
    # The store learns of an execution a moment after its spawn (docs/protocol.md,
    # "What a crash can cost"); restart recovery works from what the store holds.
    assert wait_until(lambda: recorded(data_dir, execution_id), 10), "never recorded"
    server.stop(signal.SIGKILL)
    # Whatever the parent-death signal did not reach (the escaped daemon) lives on.
    survivors = wait_until(lambda: marked_pids(value), 2)
    if backend == "auto":
        assert leaves(server), "the killed server left its execution's cgroup"
    again = make_server({"cgroup_root": backend}, data_dir=data_dir)
    assert wait_until(lambda: not marked_pids(value), 10), (survivors, marked_pids(value))
    assert wait_until(lambda: not leaves(again), 5), leaves(again)


def test_execute_cancel_cycles_leave_nothing(
    make_server: Any, backend: str, marker: dict[str, str]
) -> None:
    """1000 execute/cancel cycles (20 at a time): no cgroup, fd or zombie is left."""
    server = make_server(
        {
            "cgroup_root": backend,
            "max_executions_per_connection": 50,
            "rate_limit_per_s": 100000,
            "rate_limit_burst": 100000,
        }
    )
    fd_dir = f"/proc/{server.pid}/fd"

    async def cycles(client: ExecutorClient, count: int) -> None:
        for _ in range(count):
            execution = await client.execute(argv=["sleep", "30"], env=marker)
            await execution.cancel()
            assert (await execution.wait(20)).status == "cancelled"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            await cycles(client, 20)  # warm up: lazily opened fds count as baseline
            baseline = len(os.listdir(fd_dir))
            await asyncio.gather(*(cycles(client, 49) for _ in range(20)))
            assert wait_until(lambda: len(os.listdir(fd_dir)) <= baseline + 2, 5), (
                baseline,
                os.listdir(fd_dir),
            )

    run(main(), timeout=240)
    assert marked_pids(marker[MARKER_NAME]) == []
    assert wait_until(lambda: not leaves(server), 5), leaves(server)
    assert wait_until(lambda: not children_of(server.pid, "Z"), 5), children_of(server.pid, "Z")


def test_bad_cgroup_root_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    env["CC_EXECUTOR_CGROUP_ROOT"] = str(tmp_path)
    env["CC_EXECUTOR_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a writable cgroup2 directory" in lines[0], done.stderr


@pytest.mark.skipif(CGROUP_ROOT is None, reason="no writable cgroup2 hierarchy on this machine")
def test_children_run_inside_their_cgroup(make_server: Any, marker: dict[str, str]) -> None:
    server = make_server({"cgroup_root": "auto"})

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            result = await client.run(argv=["cat", "/proc/self/cgroup"], env=marker)
            line = next(x for x in result.stdout.splitlines() if x.startswith("0::"))
            assert line.endswith(f"/{subtree_name(server.data_dir)}/{result.execution_id}")

    run(main())


@pytest.mark.parametrize("nice", [0, 7])
def test_child_nice_lowers_the_child_and_its_autogroup(
    make_server: Any, marker: dict[str, str], nice: int
) -> None:
    server = make_server({"child_nice": nice})
    script = "cut -d' ' -f19 /proc/self/stat; cat /proc/self/autogroup 2>/dev/null || echo none"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            result = await client.run(argv=["sh", "-c", script], env=marker)
            lines = result.stdout.splitlines()
            assert int(lines[0]) == nice, result.stdout
            if lines[1] != "none":
                assert lines[1].endswith(f"nice {nice}"), result.stdout

    run(main())
