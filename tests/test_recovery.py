"""Restart recovery and damaged store files, with a real server killed for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.client import ExecutorClient
from service.process import procfs
from service.settings import Settings
from service.store.database import DB_NAME
from service.store.recorder import read_boot_id
from service.store.recovery import recover
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE
from service.store.sqlite import SqliteStore as Store
from tests.utils import MARKER_NAME, RunningServer, marked_pids, run

TREES = [
    # a leader with two children in its group
    ["sh", "-c", "sleep 300 & sleep 300 & wait"],
    # a child that escaped into its own session
    ["sh", "-c", "setsid sleep 300 & wait"],
    # a paused tree
    ["sh", "-c", "sleep 300 & wait"],
]


def test_sigkill_server_then_restart_kills_leftovers_and_marks_lost(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = make_server(data_dir=data_dir)
    value = marker[MARKER_NAME]

    async def start_trees() -> list[str]:
        async with ExecutorClient(server.url) as client:
            ids = []
            for argv in TREES:
                started = await client.execute(argv=argv, env=marker)
                ids.append(started.id)
            await asyncio.sleep(0.3)  # let the shells fork
            await started.pause()
            # Listing reads the store: the rows are committed.
            listing = await client.call("executions.list", {"state": ["running", "paused"]})
            assert {row["execution_id"] for row in listing["executions"]} == set(ids)
            return ids

    ids = run(start_trees())
    server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while len(marked_pids(value)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # the leaders die with the server (PDEATHSIG); the rest stays
    assert len(marked_pids(value)) >= 4, "the test needs leftovers to recover"

    again = make_server(data_dir=data_dir)
    assert marked_pids(value) == [], "leftover processes survived the restart"
    lost = [entry for entry in again.logs if entry.get("message", "").startswith("execution lost")]
    assert {entry["execution_id"] for entry in lost} == set(ids)

    async def check() -> None:
        async with ExecutorClient(again.url) as client:
            listing = await client.call("executions.list", {"limit": 10})
            rows = {row["execution_id"]: row for row in listing["executions"]}
            for execution_id in ids:
                assert rows[execution_id]["state"] == "lost"
                assert "killed" in rows[execution_id]["reason"]
                assert rows[execution_id]["ended_at"] is not None
            attached = await client.attach(ids[0], since_seq=0)
            result = await attached.wait(10)
            assert result.status == "lost"
            assert "reason" in result.completed

    run(check())


def test_garbage_database_is_moved_aside(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DB_NAME).write_bytes(b"this is not a database\n" * 100)
    (data_dir / (DB_NAME + "-wal")).write_bytes(b"junk")
    server = make_server(data_dir=data_dir)
    error = server.wait_for_log(lambda entry: entry.get("level") == "ERROR")
    assert "damaged" in error["message"]
    moved = Path(error["moved_to"])
    assert moved.name.startswith(DB_NAME + ".corrupt-")
    assert moved.read_bytes().startswith(b"this is not a database")
    with urllib.request.urlopen(server.http_url + "/health", timeout=5) as response:
        health = json.load(response)
    assert health["store"]["corrupt_moved_to"] == str(moved)

    async def works() -> None:
        async with ExecutorClient(server.url) as client:
            done = await client.run(argv=["echo", "fresh"], env=marker)
            page = await client.call("transcript.get", {"execution_id": done.execution_id})
            assert [chunk["data"] for chunk in page["chunks"]] == ["fresh\n"]

    run(works())


def test_recovery_matches_pid_and_start_time(tmp_path: Path, marker: dict[str, str]) -> None:
    """In process, with real processes: a stored leader whose pid and start time
    match is killed with its group; a pid whose start time differs (reused by
    an unrelated process) is left alone, and both executions read ``lost``."""
    env = {**os.environ, **marker}
    ours = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    try:
        boot = read_boot_id()

        def row(execution_id: str, pid: int, ticks: int | None) -> tuple[Any, ...]:
            return (execution_id, "old", boot, '["sleep", "300"]', "running", pid, pid, ticks, 1.0)

        ours_ticks = procfs.start_ticks(ours.pid)
        stranger_ticks = procfs.start_ticks(stranger.pid)
        assert ours_ticks is not None and stranger_ticks is not None

        async def main() -> list[Any]:
            store = Store(Settings(data_dir=tmp_path, kill_grace_s=1))
            store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
            await store.open()
            rows = [
                row("ours", ours.pid, ours_ticks),
                row("reused", stranger.pid, stranger_ticks - 1),
            ]
            await store.write(
                lambda conn: conn.executemany(
                    "INSERT INTO executions (id, server_id, boot_id, argv, state, pid, pgid, "
                    "start_ticks, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                    rows,
                )
            )
            found = await recover(store, "new", boot)
            states = await store.read(
                lambda conn: conn.execute("SELECT id, state FROM executions ORDER BY id").fetchall()
            )
            await store.close()
            return [found, states]

        found, states = run(main())
        assert ours.wait(5) is not None  # killed
        assert stranger.poll() is None, "a process with a reused pid was killed"
        assert {item.execution_id: sorted(item.pids) for item in found} == {
            "ours": [ours.pid],
            "reused": [],
        }
        assert states == [("ours", "lost"), ("reused", "lost")]
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()


def test_status_of_an_execution_from_an_earlier_server(make_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "status-data"
    first = make_server(data_dir=data_dir)

    async def run_one() -> str:
        async with ExecutorClient(first.url) as client:
            result = await client.run(argv=["echo", "kept"])
            return result.execution_id

    execution_id = asyncio.run(run_one())
    first.stop()
    second = make_server(data_dir=data_dir)

    async def ask() -> dict[str, Any]:
        async with ExecutorClient(second.url) as client:
            state: dict[str, Any] = await client.call("status", {"execution_id": execution_id})
            return state

    state = asyncio.run(ask())
    assert state["execution_id"] == execution_id
    assert state["state"] == "completed" and state["exit_code"] == 0
