"""Holding a child before it execs the client's program, until the server says.

``execute`` spawns while the execution's first row is being committed (the
commit and the spawn overlap, see :meth:`Launcher.spawn
<service.process.launcher.Launcher.spawn>`): the child is started with the read
end of a *gate* pipe, joins its leaf, and waits on the gate just before its
exec. One byte: the record landed, exec. EOF (the server closed the gate, or
died): the execution was refused, and the child exits having run nothing of
the client's. The exec shim does this in C (``shim/cc-executor-exec.c``,
step 3); :func:`preexec` does it on the fallback path. A held child already
carries the execution's marker and sits in its leaf, so restart recovery
finds it like any other.

The byte is written by :class:`GatePipe`, from whichever thread learns first
that nothing can refuse the execution any more: the store's writer thread,
right after the commit (see :meth:`~service.process.supervisor.Admission.admit`),
so the child execs without waiting for the event loop to hear of the commit;
else the loop, once the admission returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Awaitable
from concurrent.futures import Executor
from dataclasses import dataclass

from service.process.report import Started, parse_report, read_report

_PR_SET_PDEATHSIG = 1


def preexec(
    procs_file: str | None, cpu_tasks: str | None, nice: int, gate: tuple[int, int] | None
) -> None:
    """The shim's steps, in Python, for when there is no shim (fork path)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    for joined in (procs_file, cpu_tasks):
        # The leaf, then the children's cpu cgroup (service.process.cpu).
        if joined is not None:
            with open(joined, "w", encoding="ascii") as handle:
                handle.write("0")
    if nice > 0:
        os.nice(nice)
        # Each execution is its own session, so its own autogroup (see the shim).
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as handle:
            handle.write(str(nice))
    if gate is not None:
        # Held until the server opened the gate (see the shim); our copy of
        # its write end must not keep EOF away.
        gate_r, gate_w = gate
        # Gone already when the gate was decided before the fork (the store's
        # writer thread opens it as soon as the commit lands): nothing to close.
        with contextlib.suppress(OSError):
            os.close(gate_w)
        if os.read(gate_r, 1) != b"\x01":
            raise ChildProcessError("the execution was refused before its program ran")
        os.close(gate_r)


class GatePipe:
    """The server's end of one held child's gate: opened (one byte) or shut
    (EOF) once, from any thread; whichever comes first wins, the other is a
    no-op. Owns the write end given to :meth:`arm`, and closes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._decided: bool | None = None  # True: opened, False: shut

    @property
    def opened(self) -> bool:
        """Whether the child was let through (it may be running its program)."""
        return self._decided is True

    def arm(self, fd: int) -> None:
        """The gate's write end exists now; a decision made before is carried out."""
        with self._lock:
            self._fd = fd
            if self._decided is not None:
                self._carry_out()

    def open(self) -> None:
        """Let the child exec its program; nothing once the gate was shut."""
        self._decide(True)

    def shut(self) -> None:
        """Refuse: the held child exits having run nothing; nothing once opened."""
        self._decide(False)

    def _decide(self, opened: bool) -> None:
        with self._lock:
            if self._decided is None:
                self._decided = opened
                self._carry_out()

    def _carry_out(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._decided:
                # A held child that died meanwhile (killed from outside) reports so itself.
                with contextlib.suppress(BrokenPipeError):
                    os.write(fd, b"\x01")
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Held:
    """How a child is held before its exec: until ``admitted`` (the admissions)
    is done, or ``pipe`` was opened first by another thread."""

    admitted: asyncio.Future[None]
    pipe: GatePipe


async def pass_gate(
    gate: Awaitable[None],
    pipe: GatePipe,
    gate_r: int,
    spawning: asyncio.Future[Started],
    cloned: bool,
    executor: Executor,
) -> None:
    """Await ``gate`` while the child is held, then open ``pipe`` (unless the
    writer thread did already) or, when ``gate`` raised, shut it and reap the
    child before re-raising (killed first when it was let through already)."""
    try:
        await gate
    except BaseException:
        pipe.shut()  # EOF: the held child exits 127, having run nothing
        await asyncio.shield(_abandon(spawning, gate_r, cloned, executor, pipe.opened))
        raise
    pipe.open()
    # Safe once spawning is done: the spawn (thread) passes it to the child.
    spawning.add_done_callback(lambda _: os.close(gate_r))


async def _abandon(
    spawning: asyncio.Future[Started],
    gate_r: int,
    cloned: bool,
    executor: Executor,
    opened: bool,
) -> None:
    """Reap the child held at a gate that was shut, and close its pipes; a
    child let through before the refusal (``opened``) is killed first."""
    try:
        started = await spawning
    except (OSError, subprocess.SubprocessError):
        return  # the fallback's pre-exec step refused; Popen reaped it
    finally:
        os.close(gate_r)
    for pipe in (started.stdout_fd, started.stderr_fd, started.stdin_fd):
        if pipe is not None:
            os.close(pipe)
    if started.report_fd is None:
        leader = started.popen
    else:
        report = await read_report(started.report_fd)
        leader, _ = parse_report(started.popen, report, cloned)
    if opened:
        leader.kill()
    await asyncio.get_running_loop().run_in_executor(executor, leader.wait)
