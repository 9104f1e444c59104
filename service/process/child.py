"""Starting one child: off the event loop, on the vfork path, inside its tree.

:class:`Launcher` spawns with :class:`subprocess.Popen` in one dedicated
thread, so ``execute`` never holds the event loop for a fork, and without a
``preexec_fn``, so CPython takes its ``vfork`` path (the cost of a spawn
does not grow with the server's heap; uvloop's libuv always forks). What must
happen in the child before the user's program runs is done by the exec shim
``cc-executor-exec`` (a few lines of C, built by ``ci/install`` with the system
compiler, see ``service/process/shim/``): it arms the parent-death signal,
joins the execution's cgroup, optionally lowers its priority, and execs the
file the server checked with the argv[0] the client sent.

Where no shim was built (no C compiler), the same steps run in a
``preexec_fn``: CPython then forks instead of vforking, which is slower but
keeps every guarantee.

The parent-death signal fires when the *thread* that spawned the child ends;
the spawn thread lives as long as the launcher, which the supervisor closes
after every execution ended.

:class:`Child` wraps the started process for asyncio: its pipes as streams,
and its exit as a pidfd event (no SIGCHLD handler, no polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from service.errors import InvalidState, LimitReached
from service.process.hold import pass_gate, preexec
from service.process.report import Started, parse_report, read_report
from service.process.sibling import Leader, Sibling

SHIM_NAME = "cc-executor-exec"
#: Spawns closer than this move into their leaf, the others are cloned into it:
#: a move this soon after the last one finds the kernel's lock still in writer
#: mode (measured: 0.2 ms at 10 and 15 ms apart, 8 to 20 ms from 20 ms apart).
MOVE_WARM_S = 0.015
IntoLeaf = Literal["auto", "clone", "move"]
#: Bytes of input that may wait for a child to read them before ``input`` is refused.
STDIN_BUFFER_LIMIT = 1024 * 1024


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


def _pipe_file(fd: int, mode: str, loop: asyncio.AbstractEventLoop) -> Any:
    """A file object for a pipe end handed to the loop.

    uvloop's libuv closes the fd itself when the transport closes, and uvloop
    then closes the file object too: a second close of the same number, which
    can hit an fd the spawn thread has just opened. Under uvloop the file
    object therefore must not own the fd; asyncio's own transports close it
    once, through the file object.
    """
    owns = not type(loop).__module__.startswith("uvloop")
    return open(fd, mode, buffering=0, closefd=owns)


class Child:
    """A started child process, its pipes connected to the event loop."""

    def __init__(self, started: Started, limit: int, leader: Leader | None = None) -> None:
        self._started = started
        #: The user's program: the started process, or the shim's clone of it.
        self._popen: Leader = leader or started.popen
        self.pid = self._popen.pid
        self.stdout = asyncio.StreamReader(limit=limit)
        self.stderr = asyncio.StreamReader(limit=limit)
        self.stdin: asyncio.StreamWriter | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd: int | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self._unconnected = [
            fd for fd in (started.stdout_fd, started.stderr_fd, started.stdin_fd) if fd is not None
        ]

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        started = self._started
        for fd, reader in ((started.stdout_fd, self.stdout), (started.stderr_fd, self.stderr)):
            transport, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader),
                _pipe_file(fd, "rb", loop),
            )
            self._unconnected.remove(fd)
            self._transports.append(transport)
        if started.stdin_fd is not None:
            writer, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, _pipe_file(started.stdin_fd, "wb", loop)
            )
            self._unconnected.remove(started.stdin_fd)
            self._transports.append(writer)
            self.stdin = asyncio.StreamWriter(writer, protocol, None, loop)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:
            # No pidfd (old kernel, not Linux): one thread waits instead.
            wait = loop.run_in_executor(None, self._popen.wait)
            wait.add_done_callback(lambda done: self._set_exit(done.result()))
        else:
            loop.add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        assert self._pidfd is not None
        returncode = self._popen.poll()
        if returncode is None:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._set_exit(returncode)

    def _set_exit(self, returncode: int) -> None:
        if not self._exited.done():
            self._exited.set_result(returncode)

    def write_input(self, payload: bytes, eof: bool) -> int:
        """Write ``payload`` to stdin without waiting (then close it on ``eof``);
        its length. InvalidState once stdin is closed, LimitReached while more
        than :data:`STDIN_BUFFER_LIMIT` bytes wait for the child to read them."""
        stdin = self.stdin
        if stdin is None or stdin.is_closing():
            raise InvalidState("stdin is closed")
        if stdin.transport.get_write_buffer_size() > STDIN_BUFFER_LIMIT:
            raise LimitReached("stdin buffer full: the process is not reading its input")
        try:
            if payload:
                stdin.write(payload)
            if eof:
                stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            raise InvalidState("stdin is closed: the process stopped reading") from None
        return len(payload)

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal). Safe to cancel."""
        return await asyncio.shield(self._exited)

    def close(self) -> None:
        """Close every pipe and stop watching; after the readers are done."""
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for fd in self._unconnected:
            os.close(fd)
        self._unconnected.clear()
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if isinstance(self._popen, Sibling):
            self._popen.close()  # its pidfd, even when it was never reaped


class Launcher:
    """Spawns children from one dedicated thread (see the module docstring)."""

    def __init__(
        self,
        *,
        nice: int = 0,
        shim: str | None = None,
        use_shim: bool = True,
        into_leaf: IntoLeaf = "auto",
    ) -> None:
        self.nice = nice
        #: The children's cpu cgroup's ``tasks`` file (see service.process.cpu).
        self.cpu_tasks: str | None = None
        #: How the program gets into its leaf cgroup (see :meth:`_cloned`);
        #: "clone" and "move" force one way, to measure them.
        self.into_leaf = into_leaf
        self._last_spawn = -math.inf
        self.shim = (shim or find_shim()) if use_shim else None
        self.mode = "shim" if self.shim else "preexec"
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
        gate: Awaitable[None] | None = None,
    ) -> Child:
        """Start ``executable`` with ``argv`` (argv[0] as given) in the tree whose
        ``cgroup.procs`` is ``procs_file``. OSError when it cannot be executed;
        then nothing of it runs.

        ``gate`` (the store's record of the execution) is awaited while the
        child is spawned: the child waits in its leaf, before it execs the
        program, until ``gate`` is done. When ``gate`` raises, the held child
        exits without running anything, is reaped, and the error is raised
        (the caller releases the leaf). ``gate`` is awaited on every path."""
        loop = asyncio.get_running_loop()
        cloned = self._cloned(procs_file)
        try:
            hold = os.pipe2(os.O_CLOEXEC) if gate is not None else None
        except BaseException:
            if gate is not None:
                await gate
            raise
        spawning = loop.run_in_executor(
            self._executor,
            functools.partial(
                self._start, executable, argv, cwd, env, keep_stdin, procs_file, cloned, hold
            ),
        )
        if gate is not None and hold is not None:
            await pass_gate(gate, hold, spawning, cloned, self._executor)
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
            for pipe in (started.stdout_fd, started.stderr_fd, started.stdin_fd):
                if pipe is not None:
                    os.close(pipe)
            raise
        try:
            await child.connect()
        except BaseException:
            leader.kill()
            child.close()
            raise
        return child

    async def _leader(
        self, shim: subprocess.Popen[bytes], report: bytes, cloned: bool, path: str
    ) -> Leader:
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
            stdin = subprocess.DEVNULL if in_r is None else in_r
            popen, report = self._popen(
                executable, argv, cwd, env, (stdin, out_w, err_w), procs_file, cloned, hold
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
        return Started(popen, out_r, err_r, in_w, report)

    def _popen(
        self,
        executable: str,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        stdio: tuple[int, int, int],
        procs_file: str | None,
        cloned: bool,
        hold: tuple[int, int] | None,
    ) -> tuple[subprocess.Popen[bytes], int | None]:
        """The started process, and the read end of the shim's report pipe."""
        stdin, stdout, stderr = stdio
        if self.shim is None:
            fallback = subprocess.Popen(
                argv,
                executable=executable,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=functools.partial(preexec, procs_file, self.cpu_tasks, self.nice, hold),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            return fallback, None
        errors, report = os.pipe2(os.O_CLOEXEC)
        try:
            popen = subprocess.Popen(
                [
                    self.shim,
                    # "@LEAF": born in the leaf (see the shim).
                    ("@" + os.path.dirname(procs_file) if cloned else procs_file)
                    if procs_file
                    else "-",
                    self.cpu_tasks or "-",
                    str(report),
                    "-" if hold is None else str(hold[0]),
                    str(self.nice),
                    str(os.getpid()),
                    executable,
                    *argv,
                ],
                executable=self.shim,
                cwd=cwd,
                env=env,
                start_new_session=True,
                pass_fds=(report,) if hold is None else (report, hold[0]),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        except BaseException:
            os.close(errors)
            raise
        finally:
            os.close(report)
        # The spawn thread returns as soon as the shim runs; the loop then waits
        # (without a thread) for the report: EOF once the user's program was
        # exec'd (the fd is close-on-exec), else the errno.
        return popen, errors

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
