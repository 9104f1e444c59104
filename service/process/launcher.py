"""Starting one child: from the event loop, on the vfork path, inside its tree.

:class:`Launcher` starts the exec shim ``cc-executor-exec`` (a few lines of C,
built by ``ci/install`` with the system compiler, see
``service/process/shim/``) with :func:`os.posix_spawn`, straight from the
event loop's thread. glibc's ``posix_spawn`` is a ``clone(CLONE_VM |
CLONE_VFORK)``: the loop is held only until the shim is exec'd (about 0.1 ms,
whatever the server's heap), not for a fork, and there is no hop to a spawn
thread and back (each hop is a wait for a CPU on a busy machine). What must
happen in the child before the user's program runs, the shim does: it marks
every inherited descriptor above 2 close-on-exec (``posix_spawn`` closes
nothing), arms the parent-death signal, changes to the checked ``cwd``, joins
the execution's cgroup and the children's cpu cgroup
(:attr:`Launcher.cpu_tasks`, see :mod:`~service.process.cpu`), optionally
lowers its priority, waits at the gate
(:mod:`~service.process.hold`) and execs the file the server checked with the
argv[0] the client sent.

Where no shim was built (no C compiler), the same steps run in a
``preexec_fn`` of :class:`subprocess.Popen` in one dedicated thread: CPython
then forks instead of vforking, which is slower but keeps every guarantee.

The parent-death signal fires when the *thread* that spawned the child ends:
the event loop's thread for the shim (it lives as long as the server), the
spawn thread on the fallback path (it lives as long as the launcher, which
the supervisor closes after every execution ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from service.process.child import Child
from service.process.hold import GatePipe, Held, pass_gate, preexec
from service.process.report import Started, parse_report, read_report
from service.process.sibling import Leader, Sibling

SHIM_NAME = "cc-executor-exec"
PREEXEC_FAILED = "the child's pre-exec step failed (its cgroup, cpu group, priority or gate)"
#: Spawns closer than this move into their leaf, the others are cloned into it:
#: a move this soon after the last one finds the kernel's lock still in writer
#: mode (measured: 0.2 ms at 10 and 15 ms apart, 8 to 20 ms from 20 ms apart).
MOVE_WARM_S = 0.015
IntoLeaf = Literal["auto", "clone", "move"]
#: Signals Python ignores that a program must start with at their default
#: (what :class:`subprocess.Popen`'s ``restore_signals`` resets).
_RESTORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


def hold_standard_fds() -> None:
    """Put ``/dev/null`` on whichever of fds 0, 1 and 2 the server was started
    without (``<&-``, some supervisors). Else the first pipe made for a child
    takes that number, and the ``posix_spawn`` actions that wire the child's
    0, 1 and 2 would overwrite it (``Popen`` worked around this itself)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def find_shim() -> str | None:
    """The built exec shim next to the interpreter (``.venv/bin``), if any and
    not older than its source: its argument list changes with the server, so a
    shim left from before an update is not used (``ci/install`` rebuilds it)."""
    candidate = Path(sys.executable).parent / SHIM_NAME
    if not os.access(candidate, os.X_OK):
        return None
    source = Path(__file__).with_name("shim") / f"{SHIM_NAME}.c"
    with contextlib.suppress(OSError):
        if source.stat().st_mtime > candidate.stat().st_mtime:
            return None
    return str(candidate)


class Launcher:
    """Spawns children (see the module docstring)."""

    def __init__(
        self,
        *,
        nice: int = 0,
        shim: str | None = None,
        use_shim: bool = True,
        into_leaf: IntoLeaf = "auto",
    ) -> None:
        hold_standard_fds()
        self.nice = nice
        #: The children's cpu cgroup's ``tasks`` file (see service.process.cpu).
        self.cpu_tasks: str | None = None
        #: How the program gets into its leaf cgroup (see :meth:`_cloned`);
        #: "clone" and "move" force one way, to measure them.
        self.into_leaf = into_leaf
        self._last_spawn = -math.inf
        self.shim = (shim or find_shim()) if use_shim else None
        self.mode = "shim" if self.shim else "preexec"
        #: The fallback's spawns, and the rare blocking waits (a refused child).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawn")

    async def spawn(
        self,
        *,
        executable: str,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        keep_stdin: bool,
        procs_file: str | None,
        limit: int,
        gate: Awaitable[None] | Held | None = None,
    ) -> Child:
        """Start ``executable`` with ``argv`` (argv[0] as given) in the tree whose
        ``cgroup.procs`` is ``procs_file``. OSError when it cannot be executed;
        then nothing of it runs.

        ``gate`` (the store's record of the execution) is awaited while the
        child is spawned: the child waits in its leaf, before it execs the
        program, until ``gate`` is done. When ``gate`` raises, the held child
        exits without running anything, is reaped, and the error is raised
        (the caller releases the leaf). ``gate`` is awaited on every path.
        A :class:`~service.process.hold.Held` ``gate`` also brings the pipe
        another thread may open first."""
        loop = asyncio.get_running_loop()
        pipe = gate.pipe if isinstance(gate, Held) else GatePipe()
        if isinstance(gate, Held):
            gate = gate.admitted
        cloned = self._cloned(procs_file)
        try:
            hold = os.pipe2(os.O_CLOEXEC) if gate is not None else None
        except BaseException:
            if gate is not None:
                await gate
            raise
        start = functools.partial(
            self._start, executable, argv, cwd, env, keep_stdin, procs_file, cloned, hold
        )
        spawning: asyncio.Future[Started]
        if self.shim is not None:
            spawning = loop.create_future()
            try:
                spawning.set_result(start())
            except BaseException as exc:
                spawning.set_exception(exc)
        else:
            spawning = loop.run_in_executor(self._executor, start)
        if gate is not None and hold is not None:
            pipe.arm(hold[1])
            await pass_gate(gate, pipe, hold[0], spawning, cloned, self._executor)
        started = await spawning
        report = started.report_fd
        leader: Leader = started.popen
        try:
            if report is not None:
                fd, report = report, None
                report_bytes = await read_report(fd)
                leader = await self._leader(started.popen, report_bytes, cloned, executable)
            child = Child(started, limit, leader)
        except BaseException:
            if report is not None:
                os.close(report)
            # A cancelled spawn: the shim's clone, if any, is in the leaf cgroup,
            # which the caller releases (killing what is in it).
            leader.kill()
            for end in (started.stdout_fd, started.stderr_fd, started.stdin_fd):
                if end is not None:
                    os.close(end)
            raise
        try:
            await child.connect()
        except BaseException:
            leader.kill()
            child.close()
            raise
        return child

    async def _leader(self, shim: Leader, report: bytes, cloned: bool, path: str) -> Leader:
        """The user's program from the shim's report; OSError when it could not
        be started (every process it started reaped)."""
        leader, code = parse_report(shim, report, cloned)
        if not code:
            return leader
        await asyncio.get_running_loop().run_in_executor(self._executor, leader.wait)
        raise OSError(code, os.strerror(code), path)

    def _start(
        self,
        executable: str,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        keep_stdin: bool,
        procs_file: str | None,
        cloned: bool,
        hold: tuple[int, int] | None,
    ) -> Started:
        # Our own pipes, not Popen's file objects: the loop's transports get the
        # parent's ends, and nothing else ever closes them.
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        in_r, in_w = os.pipe2(os.O_CLOEXEC) if keep_stdin else (None, None)
        try:
            stdio = (in_r, out_w, err_w)
            if self.shim is None:
                started, report = self._popen(executable, argv, cwd, env, stdio, procs_file, hold)
            else:
                started, report = self._posix_spawn(
                    self.shim, executable, argv, cwd, env, stdio, procs_file, cloned, hold
                )
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, in_r):
                if fd is not None:
                    os.close(fd)
        return Started(started, out_r, err_r, in_w, report)

    def _popen(
        self,
        executable: str,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        stdio: tuple[int | None, int, int],
        procs_file: str | None,
        hold: tuple[int, int] | None,
    ) -> tuple[Leader, None]:
        """The fallback without a shim: the pre-exec steps in a ``preexec_fn``."""
        stdin, stdout, stderr = stdio
        try:
            popen = subprocess.Popen(
                argv,
                executable=executable,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=functools.partial(preexec, procs_file, self.cpu_tasks, self.nice, hold),
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=stdout,
                stderr=stderr,
            )
        except subprocess.SubprocessError as exc:
            # The pre-exec step raised in the child, which Popen reaped; it
            # does not say why. An OSError, as the shim's failed step would
            # be: the execution is then `failed` with this reason.
            raise OSError(errno.EIO, PREEXEC_FAILED) from exc
        return popen, None

    def _posix_spawn(
        self,
        shim: str,
        executable: str,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        stdio: tuple[int | None, int, int],
        procs_file: str | None,
        cloned: bool,
        hold: tuple[int, int] | None,
    ) -> tuple[Leader, int]:
        """The shim, started in a new session; and the read end of its report
        pipe: EOF once the user's program was exec'd (the shim's end is
        close-on-exec), else the errno (see ``report.py``)."""
        stdin, stdout, stderr = stdio
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        # dup2 of a descriptor onto itself clears its close-on-exec flag in the
        # child only (POSIX.1-2024; glibc since 2.29, musl): the shim inherits
        # exactly its report pipe and the gate, and closes them at its exec.
        passed = [report_w] if hold is None else [report_w, hold[0]]
        actions: list[tuple[int, int, int] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
            if stdin is None
            else (os.POSIX_SPAWN_DUP2, stdin, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
            *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in passed),
        ]
        shim_argv = [
            shim,
            # "@LEAF": born in the leaf (see the shim).
            ("@" + os.path.dirname(procs_file) if cloned else procs_file) if procs_file else "-",
            self.cpu_tasks or "-",
            str(report_w),
            "-" if hold is None else str(hold[0]),
            str(self.nice),
            str(os.getpid()),
            cwd or "-",
            executable,
            *argv,
        ]
        try:
            pid = os.posix_spawn(
                shim,
                shim_argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigmask=(),
                setsigdef=_RESTORED_SIGNALS,
            )
        except BaseException:
            os.close(report_r)
            raise
        finally:
            os.close(report_w)
        try:
            shim_process = Sibling(pid)
        except BaseException:
            os.close(report_r)
            os.kill(pid, signal.SIGKILL)  # not held by a handle: reap it here
            os.waitpid(pid, 0)
            raise
        return shim_process, report_r

    def _cloned(self, procs_file: str | None) -> bool:
        """Whether the shim creates the program in its leaf (clone3
        CLONE_INTO_CGROUP) rather than moving itself there (cgroup.procs).

        A move takes the kernel's global threadgroup lock for writing, which
        costs an RCU grace period (10 to 20 ms here) unless another move
        happened in the last few milliseconds; a clone costs a new process that
        must wait for a CPU (0 to 3 ms on a busy machine, nothing on a quiet
        one). So: spawns that follow each other closely move (the lock stays
        warm), a spawn on its own is cloned (``python -m stress.bench.spawn``
        measures the three ways).
        """
        if procs_file is None or self.shim is None:
            return False
        if self.into_leaf != "auto":
            return self.into_leaf == "clone"
        now, last = time.monotonic(), self._last_spawn
        self._last_spawn = now
        # In a burst, the first move may pay the grace period once; the rest
        # find the lock warm. A spawn on its own is cloned.
        return now - last >= MOVE_WARM_S

    def close(self) -> None:
        self._executor.shutdown(wait=True)
