"""Containment on both backends: cgroup v2 (where this machine offers a writable
cgroup2 hierarchy) and process groups (forced by ``cgroup_root=off``; runs
everywhere). Real servers, real process trees, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import pytest

from service.client import ExecutorClient, RemoteExecution
from service.errors import RpcError
from service.process import cgroup, procfs
from service.process.containment import resolve_root, subtree_name
from service.process.launcher import Launcher
from service.process.spawn import EXECUTION_MARKER
from service.settings import Settings
from service.store.database import DB_NAME
from service.store.recorder import read_boot_id
from service.store.recovery import recover
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE
from service.store.sqlite import SqliteStore as Store
from tests.utils import (
    MARKER_NAME,
    RunningServer,
    health,
    marked_pids,
    runner,
    serve_stopping,
    wait_until,
)

run = runner(90)

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


def stored_state(data_dir: Path, execution_id: str) -> str | None:
    """The execution's state in the store on disk (None: no row)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True, timeout=5)
    ) as conn:
        row = conn.execute("SELECT state FROM executions WHERE id = ?", (execution_id,)).fetchone()
    return None if row is None else str(row[0])


def test_server_sigkill_then_restart_kills_leftovers(
    make_server: Any, backend: str, marker: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL right after the `execute` reply, without waiting for the store:
    the row was committed before the spawn, so the restart knows the
    execution, ends what the parent-death signal did not, and marks it lost."""
    data_dir = tmp_path / "kept"
    server = make_server({"cgroup_root": backend}, data_dir=data_dir)
    value = marker[MARKER_NAME]

    async def start() -> str:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(
                argv=["sh", "-c", "(setsid sleep 65 &); trap '' TERM; sleep 66"], env=marker
            )
            # The tree exists (else there would be nothing to leave behind); the
            # store is not asked.
            assert wait_until(lambda: len(marked_pids(value)) >= 2, 5)
            return execution.id

    execution_id = run(start())
    server.stop(signal.SIGKILL)
    # Whatever the parent-death signal did not reach (the escaped daemon) lives on.
    survivors = wait_until(lambda: marked_pids(value), 2)
    if backend == "auto":
        assert leaves(server), "the killed server left its execution's cgroup"
    again = make_server({"cgroup_root": backend}, data_dir=data_dir)
    assert wait_until(lambda: not marked_pids(value), 10), (survivors, marked_pids(value))
    assert wait_until(lambda: not leaves(again), 5), leaves(again)

    async def state() -> dict[str, Any]:
        async with ExecutorClient(again.url) as client:
            result: dict[str, Any] = await client.call("status", {"execution_id": execution_id})
            return result

    found = run(state())
    assert found["state"] == "lost", found


def test_execute_waits_for_the_store_and_refuses_without_it(
    make_server: Any, backend: str, marker: dict[str, str], tmp_path: Path
) -> None:
    """No client code runs before the store committed the execution's row:
    while another connection holds the database's write lock, `execute` waits
    and its child is held before its exec (it exists, in its tree, but the
    client's program has not run); past `store_timeout_s` it is refused with
    -32007, the held child is killed and reaped, its leaf released, and
    nothing of the client's program ever ran."""
    # Wide: the first phase must stay well inside it on a loaded machine.
    server = make_server({"store_timeout_s": 4, "cgroup_root": backend})
    value = marker[MARKER_NAME]
    lock = sqlite3.connect(server.data_dir / DB_NAME, timeout=5, isolation_level=None)
    ran = tmp_path / "ran"

    def program(name: str) -> list[str]:
        return ["sh", "-c", f"touch {ran}.{name}; exec sleep 30"]

    def has_run(name: str) -> bool:
        return os.path.exists(f"{ran}.{name}")

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            await client.run(argv=["true"])  # the store is open and idle
            lock.execute("BEGIN IMMEDIATE")
            pending = asyncio.ensure_future(client.execute(argv=program("held"), env=marker))
            # The spawn overlaps the commit: a child appears, held before its exec.
            spawned = await asyncio.to_thread(wait_until, lambda: marked_pids(value), 5)
            assert spawned, "no child spawned while recording"
            await asyncio.sleep(0.5)
            assert not pending.done(), "execute answered before the record"
            assert not has_run("held"), "client code ran before the commit"
            lock.execute("ROLLBACK")
            execution = await asyncio.wait_for(pending, 10)
            assert wait_until(lambda: has_run("held"), 5), "runs once recorded"
            assert stored_state(server.data_dir, execution.id) in ("starting", "running")
            await execution.cancel()
            await execution.wait(15)
            assert wait_until(lambda: not marked_pids(value), 5), marked_pids(value)

            lock.execute("BEGIN IMMEDIATE")
            try:
                refusing = asyncio.ensure_future(client.execute(argv=program("no"), env=marker))
                held = await asyncio.to_thread(wait_until, lambda: marked_pids(value), 5)
                assert held, "no child held"
                with pytest.raises(RpcError) as refused:
                    await refusing
                assert refused.value.code == -32007, refused.value
                assert "not started" in refused.value.message
                # The held child was killed and reaped (no zombie), its leaf
                # released, and the client's program never ran.
                assert wait_until(lambda: not marked_pids(value), 5), marked_pids(value)
                assert wait_until(lambda: not children_of(server.pid, "Z"), 5)
                assert wait_until(lambda: not leaves(server), 5), leaves(server)
                assert not has_run("no"), "client code ran without a record"
            finally:
                lock.execute("ROLLBACK")
            # The server goes on, and the refused execution's row (committed late,
            # if at all) is not left `starting`.
            assert (await client.run(argv=["true"])).status == "completed"
            with contextlib.closing(
                sqlite3.connect(f"file:{server.data_dir / DB_NAME}?mode=ro", uri=True)
            ) as conn:
                starting = conn.execute(
                    "SELECT id, reason FROM executions WHERE state = 'starting'"
                ).fetchall()
            assert starting == [], starting

    try:
        run(main())
    finally:
        lock.close()
    assert marked_pids(value) == []


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
    done = serve_stopping(tmp_path, {"CC_EXECUTOR_CGROUP_ROOT": str(tmp_path)})
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


def test_recovery_of_starting_rows(tmp_path: Path, marker: dict[str, str]) -> None:
    """A row left ``starting`` (recorded before the spawn; the server died before
    it knew the pid): the processes carrying its id are ended; one whose
    process never started is simply marked lost. In process, real processes."""
    started = subprocess.Popen(
        ["sleep", "300"],
        env={**os.environ, **marker, EXECUTION_MARKER: "spawned"},
        start_new_session=True,
    )
    try:

        async def main() -> tuple[list[Any], list[Any]]:
            store = Store(Settings(data_dir=tmp_path, kill_grace_s=1))
            store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
            await store.open()
            await store.write(
                lambda conn: conn.executemany(
                    "INSERT INTO executions (id, server_id, argv, state, created_at, updated_at) "
                    "VALUES (?, 'old', '[\"sleep\"]', 'starting', 1.0, 1.0)",
                    [("spawned",), ("never",)],
                )
            )
            found = await recover(store, "new", read_boot_id())
            rows = await store.read(
                lambda conn: conn.execute(
                    "SELECT id, state, reason FROM executions ORDER BY id"
                ).fetchall()
            )
            await store.close()
            return found, rows

        found, rows = run(main())
        assert started.wait(5) is not None, "the unrecorded leader was not ended"
        assert {item.execution_id: sorted(item.pids) for item in found} == {
            "never": [],
            "spawned": [started.pid],
        }
        (never, never_state, never_reason), (spawned, spawned_state, spawned_reason) = rows
        assert (never, never_state, spawned, spawned_state) == ("never", "lost", "spawned", "lost")
        assert "no process of it was left" in never_reason
        assert "1 leftover process(es) killed" in spawned_reason
    finally:
        started.kill()
        started.wait()


@pytest.mark.skipif(CGROUP_ROOT is None, reason="no writable cgroup2 hierarchy on this machine")
@pytest.mark.parametrize("rounds", [0, cgroup.STOP_ROUNDS], ids=["frozen", "unfrozen"])
def test_pause_of_a_forking_tree_stops_every_member(
    tmp_path: Path, marker: dict[str, str], monkeypatch: pytest.MonkeyPatch, rounds: int
) -> None:
    """PAUSE of a shell forking as fast as it can, in process on a real leaf:
    every member is stopped when it returns, and no member appears while
    paused; ``rounds`` 0 forces the frozen way (what a fork storm falls back to)."""
    monkeypatch.setattr(cgroup, "STOP_ROUNDS", rounds)
    forks = "i=0; while [ $i -lt 400 ]; do sleep 30 & i=$((i+1)); done; wait"

    async def main() -> None:
        settings = Settings(data_dir=tmp_path, cgroup_root="auto")
        assert CGROUP_ROOT is not None
        containment = cgroup.CgroupContainment(Path(CGROUP_ROOT) / subtree_name(tmp_path), settings)
        await containment.start()
        launcher = Launcher()
        tree = containment.open("forks")
        child = await launcher.spawn(
            executable="/bin/sh",
            argv=["sh", "-c", forks],
            cwd=None,
            env={**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            keep_stdin=False,
            procs_file=tree.procs_file,
            limit=65536,
        )
        try:
            tree.attach(child.pid)
            assert wait_until(lambda: len(tree.members()) > 20, 10)
            await tree.stop(10)
            members = tree.members()
            live = procfs.live_stats(members)
            assert live and all(procfs.is_stopped(s) for s in live), [
                (s.pid, s.state) for s in live if not procfs.is_stopped(s)
            ]
            await asyncio.sleep(0.3)
            assert set(tree.members()) == set(members), "a member appeared while paused"
        finally:
            tree.kill()
            await tree.wait_empty(10)
            await child.wait()
            child.close()
            tree.release()
            await containment.close()
            launcher.close()

    run(main())


@pytest.mark.skipif(CGROUP_ROOT is None, reason="no writable cgroup2 hierarchy on this machine")
@pytest.mark.parametrize("into_leaf", ["clone", "move"])
def test_spawn_into_a_leaf_both_ways(
    tmp_path: Path, marker: dict[str, str], into_leaf: Literal["clone", "move"]
) -> None:
    """The two ways into a leaf (born by clone3, or moved), in process: the
    program runs in the leaf as the server's own child, its exit status and
    a signal come back, and a file that cannot be exec'd is an OSError with
    its errno and leaves no process behind."""
    assert CGROUP_ROOT is not None
    leaf_root = Path(tempfile.mkdtemp(prefix="ccx-test-", dir=CGROUP_ROOT))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a program\n")
    garbage.chmod(0o755)
    env = {**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    async def main() -> None:
        launcher = Launcher(into_leaf=into_leaf)
        try:
            for name, argv, expected in (
                ("exits", ["sh", "-c", "grep -q /exits$ /proc/self/cgroup && exit 3"], 3),
                ("killed", ["sh", "-c", "kill -9 $$"], -9),
            ):
                leaf = leaf_root / name
                leaf.mkdir()
                child = await launcher.spawn(
                    executable="/bin/sh",
                    argv=argv,
                    cwd=None,
                    env=env,
                    keep_stdin=False,
                    procs_file=str(leaf / "cgroup.procs"),
                    limit=65536,
                )
                stat = procfs.read_stat(child.pid)
                assert stat is not None and stat.ppid == os.getpid() and stat.pgid == child.pid
                assert await asyncio.wait_for(child.wait(), 10) == expected, name
                child.close()
                leaf.rmdir()
            leaf = leaf_root / "garbage"
            leaf.mkdir()
            with pytest.raises(OSError) as failed:
                await launcher.spawn(
                    executable=str(garbage),
                    argv=["garbage"],
                    cwd=None,
                    env=env,
                    keep_stdin=False,
                    procs_file=str(leaf / "cgroup.procs"),
                    limit=65536,
                )
            assert failed.value.errno == errno.ENOEXEC, failed.value
            assert (leaf / "cgroup.procs").read_text() == ""
            leaf.rmdir()
        finally:
            launcher.close()

    try:
        run(main())
        assert wait_until(lambda: not children_of(os.getpid(), "Z"), 5), children_of(
            os.getpid(), "Z"
        )
    finally:
        for leaf in leaf_root.iterdir():
            if leaf.is_dir():
                leaf.rmdir()
        leaf_root.rmdir()


@pytest.mark.parametrize("mode", ["shim", "preexec", "clone", "move"])
def test_spawn_is_held_until_its_gate(tmp_path: Path, marker: dict[str, str], mode: str) -> None:
    """In process, every way to spawn (the shim without a cgroup, the fallback
    pre-exec step, born in a leaf by clone3, moved into it): a child spawned
    with a gate runs nothing of its program until the gate is done, then runs
    it; when the gate raises, that error comes back, the held child is reaped
    (no zombie, nothing left in its leaf) and its program never ran."""
    cgroups = mode in ("clone", "move")
    if cgroups and CGROUP_ROOT is None:
        pytest.skip("no writable cgroup2 hierarchy on this machine")
    leaf_root = Path(tempfile.mkdtemp(prefix="ccx-test-", dir=CGROUP_ROOT)) if cgroups else None
    env = {**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    ran = tmp_path / "ran"

    async def spawn(launcher: Launcher, name: str, gate: asyncio.Future[None]) -> Any:
        procs_file = None
        if leaf_root is not None:
            (leaf_root / name).mkdir()
            procs_file = str(leaf_root / name / "cgroup.procs")
        return await launcher.spawn(
            executable="/bin/sh",
            argv=["sh", "-c", f"touch {ran}.{name}"],
            cwd=None,
            env=env,
            keep_stdin=False,
            procs_file=procs_file,
            limit=65536,
            gate=gate,
        )

    # Children of this worker started by other tests (their servers) are not ours.
    others = set(children_of(os.getpid(), "RSDZ"))

    def held() -> list[int]:
        # The fallback's child has the server's environment until its exec.
        return [pid for pid in children_of(os.getpid(), "RSD") if pid not in others]

    async def main() -> None:
        into_leaf: Literal["clone", "move"] = "move" if mode == "move" else "clone"
        launcher = Launcher(use_shim=mode != "preexec", into_leaf=into_leaf)
        loop = asyncio.get_running_loop()
        try:
            gate: asyncio.Future[None] = loop.create_future()
            spawning = asyncio.ensure_future(spawn(launcher, "opened", gate))
            assert await asyncio.to_thread(wait_until, held, 5)
            await asyncio.sleep(0.3)
            assert not ran.with_suffix(".opened").exists(), "ran before its gate opened"
            gate.set_result(None)
            child = await asyncio.wait_for(spawning, 10)
            assert await asyncio.wait_for(child.wait(), 10) == 0
            child.close()
            assert ran.with_suffix(".opened").exists()

            gate = loop.create_future()
            spawning = asyncio.ensure_future(spawn(launcher, "closed", gate))
            assert await asyncio.to_thread(wait_until, held, 5)
            gate.set_exception(LookupError("refused"))
            with pytest.raises(LookupError, match="refused"):
                await asyncio.wait_for(spawning, 10)
            assert held() == [] and marked_pids(marker[MARKER_NAME]) == []
            assert not ran.with_suffix(".closed").exists(), "ran though its gate was closed"
            if leaf_root is not None:
                assert (leaf_root / "closed" / "cgroup.procs").read_text() == ""
        finally:
            launcher.close()

    try:
        run(main())
        zombies = lambda: set(children_of(os.getpid(), "Z")) - others  # noqa: E731
        assert wait_until(lambda: not zombies(), 5), zombies()
    finally:
        if leaf_root is not None:
            for leaf in leaf_root.iterdir():
                if leaf.is_dir():
                    leaf.rmdir()
            leaf_root.rmdir()


WALK = """
import asyncio, os, signal, sys, time
from service.process import procfs
from service.process.launcher import Launcher
from service.process.pgroup import ProcessGroupContainment
from service.process.reaper import become_subreaper
from service.process.spawn import EXECUTION_MARKER
from service.settings import Settings

assert become_subreaper()
TREE = "sleep 60 & (setsid sleep 61 &) ; setsid sh -c 'sleep 62' & wait"

async def main() -> None:
    containment = ProcessGroupContainment(Settings())
    launcher = Launcher()
    env = {"PATH": os.environ["PATH"], EXECUTION_MARKER: "walked", **dict([sys.argv[1].split("=", 1)])}
    tree = containment.open("walked")
    child = await launcher.spawn(executable="/bin/sh", argv=["sh", "-c", TREE], cwd=None,
                                 env=env, keep_stdin=False, procs_file=None, limit=65536)
    tree.attach(child.pid)
    await asyncio.sleep(0.5)
    everyone = tree._members(containment.scan(fresh=True))
    before = containment.scans
    await tree.stop(5)
    stopped = [procfs.is_stopped(s) for s in procfs.live_stats(everyone)]
    after = containment.scans
    tree.kill()
    await child.wait()
    child.close()
    launcher.close()
    print(len(everyone), all(stopped), after - before, flush=True)

asyncio.run(main())
"""


def test_process_group_pause_walks_the_tree_without_reading_all_of_proc(
    marker: dict[str, str],
) -> None:
    """The process-group backend stops a tree with escapees (a background
    child, a double fork, a ``setsid``) by walking it from its leader and the
    subreaper's children: every member stopped, and not one pass over all of
    ``/proc`` (its cost would grow with the machine, as issue 13 found)."""
    ((name, value),) = marker.items()
    done = subprocess.run(
        [sys.executable, "-c", WALK, f"{name}={value}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    members, all_stopped, scans = done.stdout.split()
    assert int(members) == 5 and all_stopped == "True", done.stdout
    assert int(scans) == 0, done.stdout
