"""The launcher's spawn, in process, every way: what the program inherits from
the server, and how a spawn that cannot run fails.

The shim is started with ``posix_spawn``, which closes nothing and resets
nothing by itself (unlike ``Popen``): these tests pin down that the program
still gets only stdin, stdout and stderr, its ``cwd``, default ``SIGPIPE`` and
an empty signal mask, and that a ``cwd`` that is gone by the spawn is an
OSError with nothing left running.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from service.process.containment import resolve_root
from service.process.launcher import Launcher
from service.process.spawn import SERVER_ENV_PREFIX, passed_environment
from tests.utils import runner, wait_until

run = runner(60)
CGROUP_ROOT = resolve_root("auto")
WAYS = [
    pytest.param("shim", id="shim"),
    pytest.param("preexec", id="preexec"),
    *(
        pytest.param(
            way,
            id=way,
            marks=pytest.mark.skipif(CGROUP_ROOT is None, reason="no writable cgroup2 hierarchy"),
        )
        for way in ("clone", "move")
    ),
]


@pytest.fixture
def leaf_root() -> Iterator[Path | None]:
    if CGROUP_ROOT is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="ccx-test-", dir=CGROUP_ROOT))
    yield root
    for leaf in root.iterdir():
        if leaf.is_dir():
            leaf.rmdir()
    root.rmdir()


def _launcher(way: str) -> Launcher:
    into_leaf: Literal["clone", "move"] = "move" if way == "move" else "clone"
    return Launcher(use_shim=way != "preexec", into_leaf=into_leaf)


def _procs_file(way: str, leaf_root: Path | None, name: str) -> str | None:
    if way not in ("clone", "move"):
        return None
    assert leaf_root is not None
    (leaf_root / name).mkdir()
    return str(leaf_root / name / "cgroup.procs")


@pytest.mark.parametrize("way", WAYS)
def test_program_inherits_only_its_stdio_cwd_and_default_signals(
    tmp_path: Path, marker: dict[str, str], leaf_root: Path | None, way: str
) -> None:
    """A descriptor the server holds without close-on-exec, SIGPIPE ignored and
    a blocked signal in the server do not reach the program; it runs in its
    ``cwd`` with argv[0] as given. Read from outside, in ``/proc``, while the
    program (``sleep``, which opens nothing) runs."""
    inherited_r, inherited_w = os.pipe()
    os.set_inheritable(inherited_w, True)  # posix_spawn itself would pass it on
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    env = {**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    async def main() -> dict[str, object]:
        launcher = _launcher(way)
        try:
            child = await launcher.spawn(
                executable="/bin/sleep",
                argv=["my-sleep", "30"],
                cwd=str(tmp_path),
                env=env,
                keep_stdin=False,
                procs_file=_procs_file(way, leaf_root, "inherit"),
                limit=65536,
            )
            try:
                proc = Path(f"/proc/{child.pid}")
                return {
                    "fds": sorted(int(fd) for fd in os.listdir(proc / "fd")),
                    "cwd": os.readlink(proc / "cwd"),
                    "argv": (proc / "cmdline").read_bytes().split(b"\0")[:-1],
                    "status": _status(child.pid),
                }
            finally:
                os.kill(child.pid, signal.SIGKILL)
                await asyncio.wait_for(child.wait(), 10)
                child.close()
        finally:
            launcher.close()

    try:
        assert signal.SIGPIPE in _signals(_status(os.getpid())["SigIgn"]), "Python ignores it"
        seen = run(main())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        os.close(inherited_r)
        os.close(inherited_w)
    assert seen["fds"] == [0, 1, 2], seen
    assert seen["cwd"] == str(tmp_path)
    assert seen["argv"] == [b"my-sleep", b"30"]
    status = seen["status"]
    assert isinstance(status, dict)
    assert signal.SIGPIPE not in _signals(status["SigIgn"]), status
    if way != "preexec":  # Popen keeps the spawning thread's mask; posix_spawn clears it
        assert _signals(status["SigBlk"]) == set(), status


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def _signals(mask: str) -> set[int]:
    bits = int(mask, 16)
    return {n for n in range(1, 65) if bits & (1 << (n - 1))}


@pytest.mark.parametrize("way", WAYS)
def test_a_cwd_gone_by_the_spawn_is_an_oserror_and_nothing_runs(
    tmp_path: Path, marker: dict[str, str], leaf_root: Path | None, way: str
) -> None:
    """``build_spec`` checked the directory, but it can vanish before the spawn:
    the spawn fails with ENOENT, its program never ran, and nothing is left
    (no zombie, nothing in the leaf)."""
    gone = tmp_path / "gone"
    ran = tmp_path / "ran"
    env = {**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    others = set(_zombies())

    async def main() -> None:
        launcher = _launcher(way)
        procs_file = _procs_file(way, leaf_root, "gone")
        try:
            with pytest.raises(OSError) as failed:
                await launcher.spawn(
                    executable="/bin/sh",
                    argv=["sh", "-c", f"touch {ran}"],
                    cwd=str(gone),
                    env=env,
                    keep_stdin=False,
                    procs_file=procs_file,
                    limit=65536,
                )
            assert failed.value.errno == errno.ENOENT, failed.value
            if procs_file is not None:
                assert _members(procs_file) == ""
        finally:
            launcher.close()

    run(main())
    assert not ran.exists()
    assert wait_until(lambda: not set(_zombies()) - others, 5), _zombies()


def _members(procs_file: str) -> str:
    return Path(procs_file).read_text()


def _zombies() -> list[int]:
    me = os.getpid()
    found = []
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            with open(f"/proc/{me}/task/{task}/children", encoding="ascii") as handle:
                pids = [int(pid) for pid in handle.read().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                        found.append(pid)
            except OSError:
                continue
    return found


@pytest.mark.parametrize(
    "patterns",
    [[], ["PATH"], ["LC_*", "HOME"], ["[A-C]?", "X[!Y]Z"], ["*"], ["lc_*"], ["A*B", "*_KEY"]],
)
def test_passed_environment_is_fnmatchcase_per_name_and_pattern(patterns: list[str]) -> None:
    """The one compiled expression passes exactly the names some pattern matches
    with ``fnmatchcase`` (case-sensitive), and never the server's own settings."""
    source = {
        name: "v"
        for name in (
            "PATH",
            "PATHX",
            "HOME",
            "LC_ALL",
            "lc_all",
            "LC_",
            "AB",
            "BC",
            "D1",
            "XAZ",
            "XYZ",
            "A_B",
            "AB_KEY",
            "API_KEY",
            "CC_EXECUTOR_TOKEN",
            "CC_EXECUTOR_X_KEY",
            "A\nB",
        )
    }
    expected = {
        name: value
        for name, value in source.items()
        if not name.startswith(SERVER_ENV_PREFIX)
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }
    assert passed_environment(patterns, source) == expected


def test_a_server_started_without_stdin_and_stdout_still_wires_its_children(
    tmp_path: Path, marker: dict[str, str]
) -> None:
    """``serve <&- >&-``: a pipe made for a child must never sit on fd 0, 1
    or 2, where the spawn's wiring of the child's own 0, 1 and 2 would
    overwrite it. (Today the event loop's epoll and io_uring descriptors
    would take those numbers first; ``hold_standard_fds`` makes that so
    whatever the server opens first.)"""
    import json

    from service.client import ExecutorClient
    from service.client.launch import listening_port

    env = {key: value for key, value in os.environ.items() if not key.startswith("CC_EXECUTOR_")}
    env.update(CC_EXECUTOR_DATA_DIR=str(tmp_path), CC_EXECUTOR_LOG_LEVEL="INFO")
    env["CC_EXECUTOR_PASS_ENV"] = json.dumps(["PATH", "HOME", "LANG", next(iter(marker))])
    script = 'exec 0<&- 1>&-; exec "$0" -m service serve --port 0'
    proc = subprocess.Popen(
        ["sh", "-c", script, sys.executable], env=env, stderr=subprocess.PIPE, cwd=tmp_path
    )
    try:
        assert proc.stderr is not None
        port = None
        for raw in proc.stderr:
            port = listening_port(raw.decode(errors="replace"))
            if port is not None:
                break
        assert port is not None, "the server never listened"

        async def main() -> None:
            async with ExecutorClient(f"ws://127.0.0.1:{port}/ws") as client:
                execution = await client.execute(
                    argv=["sh", "-c", "cat; echo out; echo err >&2"], stdin=True, env=marker
                )
                await client.call(
                    "input", {"execution_id": execution.id, "data": "in\n", "eof": True}
                )
                result = await execution.wait(30)
                assert result.status == "completed", result
                assert result.stdout == "in\nout\n" and result.stderr == "err\n"

        run(main())
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("way", ["shim", "preexec"])
def test_a_leaf_gone_by_the_spawn_is_an_oserror_and_nothing_runs(
    tmp_path: Path, marker: dict[str, str], way: str
) -> None:
    """The child cannot join its leaf (removed meanwhile): on both paths an
    OSError (which leaves the execution `failed`), never another exception,
    and the program never ran."""
    ran = tmp_path / "ran"
    env = {**marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    async def main() -> None:
        launcher = _launcher(way)
        try:
            with pytest.raises(OSError):
                await launcher.spawn(
                    executable="/bin/sh",
                    argv=["sh", "-c", f"touch {ran}"],
                    cwd=str(tmp_path),
                    env=env,
                    keep_stdin=False,
                    procs_file=str(tmp_path / "no-such-leaf" / "cgroup.procs"),
                    limit=65536,
                )
        finally:
            launcher.close()

    run(main())
    assert not ran.exists()


def test_the_fallback_pre_exec_step_passes_a_gate_decided_before_the_fork() -> None:
    """The store's commit can land (the gate's byte written and its write end
    closed, by the writer thread) before the fallback's spawn thread forks:
    the child then has no write end to close and must pass all the same. (In
    a server the freed number is often taken again at once, which hides it.)"""
    script = (
        "import os\n"
        "from service.process.hold import preexec\n"
        "gate_r, gate_w = os.pipe()\n"
        "os.write(gate_w, b'\\x01')\n"
        "os.close(gate_w)  # decided and closed before the fork\n"
        "preexec(None, None, 0, (gate_r, gate_w))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
