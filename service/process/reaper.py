"""The server as a child subreaper: descendants that escape come back to it.

A process that double-forks or calls ``setsid`` leaves its execution's process
group, so ``killpg`` no longer reaches it. With ``PR_SET_CHILD_SUBREAPER`` set,
such an orphan is reparented to the server instead of to init, and every child
carries the :data:`~service.process.spawn.EXECUTION_MARKER` environment variable (its
execution id), which its descendants inherit. Two mechanisms use that:

* The process-group backend (:mod:`service.process.pgroup`) finds the live
  processes that carry an execution's marker outside its group, so the kill
  ladder and PAUSE reach them with the group.
* :class:`Reaper` sweeps the server's direct children every
  :data:`SWEEP_INTERVAL_S`: adopted processes whose execution is over (or that
  carry no marker at all) are killed, and adopted zombies are reaped (every
  :data:`IDLE_SWEEP_INTERVAL_S` when no execution is live).

Reaping must never steal an exit status from the event loop: uvloop (libuv)
waits with ``waitpid(pid)`` for the pids it spawned only, and a child it
cannot wait for leaves its ``proc.wait()`` hanging forever. So the reaper
never calls ``waitpid(-1)``; it waits for one pid at a time, and only for a
zombie that is not an execution leader, lives in another session than the
server's (every execution has its own session; anything else the server might
spawn would share the server's), and either was seen alive as an adoptee or
was already a zombie at the previous sweep (libuv reaps its own children on
the SIGCHLD of the same loop iteration, long before that).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Mapping
from typing import Protocol

from service.process import procfs
from service.process.spawn import EXECUTION_MARKER
from service.process.state import ExecutionState

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
#: How often the reaper looks at the server's direct children while anything
#: can be orphaned (live executions, adoptees pending); and when idle.
SWEEP_INTERVAL_S = 0.5
IDLE_SWEEP_INTERVAL_S = 5.0

_state = {"subreaper": False}


def become_subreaper() -> bool:
    """Make orphaned descendants of our children our own children (Linux).
    True when the kernel accepted it."""
    libc = ctypes.CDLL(None, use_errno=True)
    accepted = bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    _state["subreaper"] = accepted
    if not accepted:
        logger.warning(
            "cannot become a child subreaper; escaped processes are found by marker only",
            extra={"errno": ctypes.get_errno()},
        )
    return accepted


def is_subreaper() -> bool:
    """Whether :func:`become_subreaper` succeeded in this process."""
    return _state["subreaper"]


def marker_entry(execution_id: str) -> bytes:
    """The ``NAME=value`` environment entry every process of the execution carries."""
    return f"{EXECUTION_MARKER}={execution_id}".encode()


def marker_of(pid: int) -> str | None:
    """The execution id in the environment of ``pid``; None when it carries none or
    its environment cannot be read (gone, zombie, other user, setuid)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            entries = handle.read().split(b"\0")
    except OSError:
        return None
    prefix = EXECUTION_MARKER.encode() + b"="
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


class Running(Protocol):
    """What the reaper needs to know of an execution."""

    @property
    def pid(self) -> int | None: ...

    @property
    def state(self) -> ExecutionState: ...


class Registry(Protocol):
    """What the reaper needs to know of the supervisor (no import of it)."""

    @property
    def live(self) -> Mapping[str, Running]: ...

    def newest_finished(self) -> str | None: ...


class Reaper:
    """Adopts orphans, kills the ones whose execution is over, reaps zombies.

    One task, started with the server and stopped after the supervisor: its
    last sweep kills every adoptee that is left.
    """

    def __init__(self, supervisor: Registry, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.killed = 0
        self.reaped = 0
        self._adopted: dict[int, str | None] = {}
        self._zombies_seen: set[int] = set()
        self._unmarked_seen: set[int] = set()
        #: Each live adoptee's marker, by pid and start time (pids are reused).
        self._markers: dict[tuple[int, int], str | None] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        become_subreaper()
        self._task = asyncio.create_task(self._run(), name="reaper")

    async def stop(self) -> None:
        """Stop sweeping; kill and reap every adoptee still there (up to a second)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while True:
            left = self.sweep(final=True)
            if not left or loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        logger.info("reaper stopped", extra={"killed": self.killed, "reaped": self.reaped})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = 0
        last = loop.time()
        newest: str | None = None
        while True:
            await asyncio.sleep(self.interval_s)
            # Looking at the supervisor is free; a sweep reads /proc. An
            # execution that started and ended since the last look left the
            # newest finished one changed.
            finished = self.supervisor.newest_finished()
            idle = not remaining and not self.supervisor.live and finished == newest
            newest = finished
            if idle and loop.time() - last < IDLE_SWEEP_INTERVAL_S:
                continue
            last = loop.time()
            try:
                remaining = self.sweep()
            except Exception:
                logger.exception("reaper sweep failed")

    def sweep(self, *, final: bool = False) -> int:
        """One pass over the server's direct children; how many adoptees remain.

        ``final`` (at shutdown, when no execution is left): kill every adoptee.
        """
        me = os.getpid()
        my_sid = os.getsid(0)
        live = self.supervisor.live.values()
        leaders = {e.pid for e in live if e.pid is not None}
        starting = any(e.pid is None for e in live)
        zombies_now: set[int] = set()
        unmarked_now: set[int] = set()
        seen: set[int] = set()
        seen_keys: set[tuple[int, int]] = set()
        remaining = 0
        for pid in procfs.children_of(me):
            stat = procfs.read_stat(pid)
            if stat is None or stat.ppid != me or pid in leaders or stat.sid == my_sid:
                continue
            if stat.state in procfs.GONE_STATES:
                known = pid in self._adopted or pid in self._zombies_seen
                if final or (known and not starting):
                    self._reap(pid)
                else:
                    zombies_now.add(pid)
                    remaining += 1
                continue
            # An adoptee's environment is read once in its life (a storm of
            # double forks leaves hundreds of them to look at every sweep).
            key = (pid, stat.start_ticks)
            if key in self._markers:
                execution_id = self._markers[key]
            else:
                execution_id = self._markers[key] = marker_of(pid)
            seen_keys.add(key)
            execution = self.supervisor.live.get(execution_id) if execution_id else None
            if execution is not None and execution.pid is None:
                continue  # its own leader, between spawn and registration
            remaining += 1
            seen.add(pid)
            if pid not in self._adopted:
                self._adopted[pid] = execution_id
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "adopted an orphan",
                        extra={
                            "pid": pid,
                            "execution_id": execution_id,
                            "cmdline": procfs.cmdline(pid),
                        },
                    )
            if execution_id is None:
                # No marker: it hid its origin. Give a just-forked leader one sweep
                # to exec before deciding (uvloop returns after exec, but be sure).
                if final or pid in self._unmarked_seen:
                    self._kill(pid, None, "carries no execution marker")
                else:
                    unmarked_now.add(pid)
                continue
            if final or execution is None or execution.state.is_final:
                self._kill(pid, execution_id, "its execution is over")
        self._zombies_seen = zombies_now
        self._unmarked_seen = unmarked_now
        self._markers = {key: self._markers[key] for key in seen_keys}
        for pid in [p for p in self._adopted if p not in seen and p not in zombies_now]:
            del self._adopted[pid]
        return remaining

    def _kill(self, pid: int, execution_id: str | None, why: str) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        self.killed += 1
        logger.warning(
            "killed an adopted orphan: %s",
            why,
            extra={"pid": pid, "execution_id": execution_id},
        )

    def _reap(self, pid: int) -> None:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped = 0
        self._adopted.pop(pid, None)
        if reaped:
            self.reaped += 1
            logger.debug(
                "reaped an adopted process",
                extra={"pid": pid, "exit_status": os.waitstatus_to_exitcode(status)},
            )
