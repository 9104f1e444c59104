"""The children's cpu cgroup (service/process/cpu.py): real servers, real
children, real cgroups where this machine has a writable cpu controller
(cgroup v2 delegated to the server's subtree, or cgroup v1 ``cpu``); the
fallbacks and the refusals run everywhere."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest

from service.client import ExecutorClient
from service.process import cpu
from service.process.containment import resolve_root, subtree_name
from service.process.launcher import Launcher, find_shim
from service.settings import Settings
from tests.utils import RunningServer, health, runner, serve_stopping, wait_until

run = runner(90)

CGROUP_ROOT = resolve_root("auto")


def _v1_parent() -> str | None:
    try:
        parent = cpu.v1_cpu_dir()
    except cpu.CpuGroupError:
        return None
    return parent if os.access(parent, os.W_OK) else None


def _v2_cpu() -> bool:
    if CGROUP_ROOT is None:
        return False
    with open(f"{CGROUP_ROOT}/cgroup.controllers", encoding="ascii") as handle:
        return "cpu" in handle.read().split()


V1_PARENT = _v1_parent()
#: Which group a server on this machine gets with the default settings.
EXPECTED: cpu.CpuController | None = (
    "cgroup2" if _v2_cpu() else "cgroup1" if V1_PARENT is not None else None
)
NO_CPU = "no writable cpu controller (cgroup v2 delegated, or cgroup v1 cpu) on this machine"
needs_cpu = pytest.mark.skipif(EXPECTED is None, reason=NO_CPU)
needs_v1 = pytest.mark.skipif(V1_PARENT is None, reason="no writable cgroup v1 cpu hierarchy")


def group_of(server: RunningServer) -> dict[str, Any] | None:
    found: dict[str, Any] | None = health(server)["children_cpu"]["cgroup"]
    return found


def cpu_line(cgroup_text: str, controller: cpu.CpuController) -> str:
    """The path of the cpu cgroup in a ``/proc/PID/cgroup`` text."""
    for line in cgroup_text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller == "cgroup2" and controllers == "":
            return path
        if controller == "cgroup1" and "cpu" in controllers.split(","):
            return path
    raise AssertionError(f"no {controller} cpu line in {cgroup_text!r}")


def in_group(cgroup_text: str, group: dict[str, Any]) -> bool:
    """Whether the process whose ``/proc/PID/cgroup`` is ``cgroup_text`` is in
    ``group`` (a v1 group itself, or a leaf below the v2 subtree)."""
    path = cpu_line(cgroup_text, group["controller"])
    name = Path(group["group"]).name
    if group["controller"] == "cgroup1":
        return path != "/" and path.endswith(f"/{name}") and group["group"].endswith(path)
    return f"/{name}/" in path


def weight_file(group: dict[str, Any]) -> int:
    name = "cpu.weight" if group["controller"] == "cgroup2" else "cpu.shares"
    return int(Path(group["group"], name).read_text())


async def run_text(server: RunningServer, argv: list[str], env: dict[str, str]) -> str:
    async with ExecutorClient(server.url) as client:
        result = await client.run(argv=argv, env=env)
        assert result.exit_code == 0, result
        text: str = result.stdout
        return text


# A grandchild in its own session: it stays in the group like the leader.
SETSID_CAT = "setsid cat /proc/self/cgroup"


@needs_cpu
@pytest.mark.parametrize("weight", [None, 1, 10000])
def test_every_child_runs_in_the_servers_cpu_group(
    make_server: Any, marker: dict[str, str], weight: int | None
) -> None:
    server = make_server({} if weight is None else {"child_cpu_weight": weight})
    expected_weight = (
        Settings.model_fields["child_cpu_weight"].default if weight is None else weight
    )
    group = group_of(server)
    assert group is not None and group["controller"] == EXPECTED, group
    assert group["weight"] == expected_weight
    assert Path(group["group"]).name == subtree_name(server.data_dir)
    if EXPECTED == "cgroup1":
        assert group["shares"] == cpu.shares_of(expected_weight) == weight_file(group)
    else:
        assert weight_file(group) == expected_weight
    assert EXPECTED is not None
    for argv in (["cat", "/proc/self/cgroup"], ["sh", "-c", SETSID_CAT]):
        text = run(run_text(server, argv, marker))
        assert in_group(text, group), (text, group)
    # The server itself stays outside the group.
    own = Path(f"/proc/{server.pid}/cgroup").read_text()
    assert subtree_name(server.data_dir) not in cpu_line(own, EXPECTED)
    server.stop(signal.SIGTERM)
    assert not Path(group["group"]).exists(), "the group is removed at stop"


def test_off_leaves_children_where_the_server_is(make_server: Any, marker: dict[str, str]) -> None:
    server = make_server({"child_cpu_weight": 0})
    assert health(server)["children_cpu"] == {"cgroup": None, "nice": 0}
    if EXPECTED is None:
        pytest.skip(NO_CPU)
    text = run(run_text(server, ["cat", "/proc/self/cgroup"], marker))
    own = Path(f"/proc/{server.pid}/cgroup").read_text()
    if EXPECTED == "cgroup1":
        assert cpu_line(text, "cgroup1") == cpu_line(own, "cgroup1")
        assert V1_PARENT is not None
        assert not Path(V1_PARENT, subtree_name(server.data_dir)).exists()


@pytest.mark.parametrize("value", ["-1", "10001", "lots"])
def test_bad_cpu_weight_exits_2_with_one_line(tmp_path: Path, value: str) -> None:
    done = serve_stopping(tmp_path, {"CC_EXECUTOR_CHILD_CPU_WEIGHT": value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CC_EXECUTOR_CHILD_CPU_WEIGHT" in lines[0], done.stderr


@needs_cpu
def test_parallel_servers_never_share_a_group_and_restart_reuses_only_its_own(
    make_server: Any, marker: dict[str, str], tmp_path: Path
) -> None:
    """Two servers, two groups; a server killed with SIGKILL leaves its group,
    its restart takes that one back (and removes it at stop) and leaves the
    other server's alone."""
    first = make_server({}, data_dir=tmp_path / "first")
    second = make_server({}, data_dir=tmp_path / "second")
    one, two = group_of(first), group_of(second)
    assert one is not None and two is not None and one["group"] != two["group"]
    first.stop(signal.SIGKILL)
    if EXPECTED == "cgroup1":
        assert Path(one["group"]).is_dir(), "a killed server cannot remove its group"
    again = make_server({}, data_dir=tmp_path / "first")
    assert group_of(again) == one
    assert EXPECTED is not None
    text = run(run_text(again, ["cat", "/proc/self/cgroup"], marker))
    assert in_group(text, one), text
    again.stop(signal.SIGTERM)
    assert not Path(one["group"]).exists()
    assert Path(two["group"]).is_dir(), "the other server's group is left alone"
    text = run(run_text(second, ["cat", "/proc/self/cgroup"], marker))
    assert in_group(text, two), text


@needs_cpu
def test_many_runs_leave_nothing_in_the_group(make_server: Any, marker: dict[str, str]) -> None:
    """300 short executions, 30 at a time, and 20 cancelled forking ones: the
    group is empty afterwards and gone after stop."""
    server = make_server(
        {
            "max_executions_per_connection": 50,
            "rate_limit_per_s": 100000,
            "rate_limit_burst": 100000,
        }
    )
    group = group_of(server)
    assert group is not None
    members = Path(group["group"], "cgroup.procs")

    async def short(client: ExecutorClient, count: int) -> None:
        for _ in range(count):
            assert (await client.run(argv=["true"], env=marker)).exit_code == 0

    async def forking(client: ExecutorClient) -> None:
        execution = await client.execute(
            argv=["sh", "-c", "sleep 100 & (sleep 100 &); while :; do sleep 0.01; done"],
            env=marker,
        )
        await asyncio.sleep(0.3)
        await execution.cancel()
        assert (await execution.wait(20)).status == "cancelled"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            await asyncio.gather(*(short(client, 10) for _ in range(30)))
            await asyncio.gather(*(forking(client) for _ in range(20)))

    run(main(), timeout=240)
    assert wait_until(lambda: members.read_text() == "", 5), members.read_text()
    server.stop(signal.SIGTERM)
    assert not Path(group["group"]).exists()


# --- in process: the shim and the fallback's pre-exec step join the group ------


@needs_v1
@pytest.mark.parametrize("mode", ["shim", "preexec", "clone", "move"])
def test_spawn_joins_the_v1_group_before_exec(marker: dict[str, str], mode: str) -> None:
    """Every way to spawn (the shim without a leaf, the fallback pre-exec step,
    born in a leaf by clone3, moved into one) puts the program in the cpu
    group before it runs: its first look at /proc/self/cgroup sees it."""
    if mode != "preexec" and find_shim() is None:
        pytest.skip("no exec shim built (no C compiler)")
    leafed = mode in ("clone", "move")
    if leafed and CGROUP_ROOT is None:
        pytest.skip("no writable cgroup2 hierarchy on this machine")
    assert V1_PARENT is not None
    group = cpu.v1_group(V1_PARENT, f"ccx-test-{uuid.uuid4().hex[:12]}", 10)
    leaf_root = Path(tempfile.mkdtemp(prefix="ccx-test-", dir=CGROUP_ROOT)) if leafed else None
    env = {**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    async def main() -> str:
        into: Literal["clone", "move"] = "move" if mode == "move" else "clone"
        launcher = Launcher(use_shim=mode != "preexec", into_leaf=into)
        launcher.cpu_tasks = group.tasks_file
        try:
            procs_file = None
            if leaf_root is not None:
                (leaf_root / "leaf").mkdir()
                procs_file = str(leaf_root / "leaf" / "cgroup.procs")
            child = await launcher.spawn(
                executable="/bin/cat",
                argv=["cat", "/proc/self/cgroup"],
                cwd=None,
                env=env,
                keep_stdin=False,
                procs_file=procs_file,
                limit=65536,
            )
            output = await asyncio.wait_for(child.stdout.read(), 10)
            assert await asyncio.wait_for(child.wait(), 10) == 0
            child.close()
            return output.decode()
        finally:
            launcher.close()

    try:
        text = run(main())
        assert in_group(text, group.public()), text
        if leaf_root is not None:
            assert cpu_line(text, "cgroup2").endswith(f"/{leaf_root.name}/leaf"), text
        assert wait_until(lambda: Path(group.tasks_file or "").read_text() == "", 5)
    finally:
        run(group.close())
        if leaf_root is not None:
            for leaf in leaf_root.iterdir():
                if leaf.is_dir():
                    leaf.rmdir()
            leaf_root.rmdir()
    assert not Path(group.path).exists()


# --- where no controller can be had: a clean fallback ---------------------------


def test_v1_group_on_a_plain_directory_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(cpu.CpuGroupError, match="cannot use the cgroup v1 cpu controller"):
        cpu.v1_group(str(tmp_path), "cc-executor-x", 10)
    assert list(tmp_path.iterdir()) == []


def test_no_v1_cpu_mount_is_refused(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\ncgroup /x/memory cgroup rw,memory 0 0\n"
    )
    with pytest.raises(cpu.CpuGroupError, match="no cgroup v1 cpu hierarchy"):
        cpu.v1_cpu_dir(str(mounts), str(tmp_path / "none"))
    mounts.write_text("cgroup /x/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n")
    own = tmp_path / "cgroup"
    own.write_text("4:memory:/m\n2:cpu,cpuacct:/system.slice/cc.service\n0::/\n")
    assert cpu.v1_cpu_dir(str(mounts), str(own)) == "/x/cpu,cpuacct/system.slice/cc.service"


@pytest.mark.skipif(
    CGROUP_ROOT is None or _v2_cpu(), reason="needs a cgroup2 hierarchy without the cpu controller"
)
def test_v2_without_the_cpu_controller_is_refused() -> None:
    assert CGROUP_ROOT is not None
    subtree = Path(tempfile.mkdtemp(prefix="ccx-test-", dir=CGROUP_ROOT))
    try:
        with pytest.raises(cpu.CpuGroupError, match="no cpu controller"):
            cpu.v2_group(subtree, 10)
    finally:
        subtree.rmdir()


def test_open_group_falls_back_to_nothing(tmp_path: Path) -> None:
    """Off gives none; so does a subtree that is no cgroup where no v1 cpu
    hierarchy is writable (where one is, it is the v1 group)."""
    settings = Settings(data_dir=tmp_path, child_cpu_weight=0)
    assert cpu.open_group(settings, None) is None
    settings = Settings(data_dir=tmp_path, child_cpu_weight=5)
    group = cpu.open_group(settings, tmp_path)
    if V1_PARENT is None:
        assert group is None
        return
    assert group is not None and group.controller == "cgroup1"
    assert group.path == os.path.join(V1_PARENT, subtree_name(tmp_path))
    assert Path(group.path, "cpu.shares").read_text().strip() == str(cpu.shares_of(5))
    run(group.close())
    assert not Path(group.path).exists()
