"""Reading process state from ``/proc`` (Linux).

Used to confirm that a whole process group is stopped before PAUSE replies,
to tell whether a group still has members, to tell PID reuse apart (start
time), and to find escaped descendants by their environment marker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

PROC = "/proc"
#: States of a process that will run no more code: zombie, dead.
GONE_STATES = frozenset("ZXx")
#: States of a stopped process: stopped by a signal, stopped by a tracer.
STOPPED_STATES = frozenset("Tt")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` that the service uses."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/PID/stat``; None when the process is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold ")" or spaces.
    rest = raw[raw.rfind(b")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=rest[0].decode(),
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        sid=int(rest[3]),
        start_ticks=int(rest[19]),
    )


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from
    ``/proc/PID/task/*/children`` without reading every process; a full pass
    where the kernel lacks that file."""
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        tids = []
    found: list[int] = []
    try:
        for tid in tids:
            with open(f"{PROC}/{pid}/task/{tid}/children", "rb") as handle:
                found.extend(int(field) for field in handle.read().split())
    except FileNotFoundError:
        if not os.path.exists(f"{PROC}/{pid}/task/{pid}/children"):
            return [p for p in all_pids() if (s := read_stat(p)) is not None and s.ppid == pid]
    return found


def group_members(pgid: int) -> list[ProcStat]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgid == pgid and stat.state not in GONE_STATES:
            members.append(stat)
    return members


def stop_pending(pid: int) -> bool:
    """Whether SIGSTOP is pending for ``pid`` (thread or process-wide)."""
    bit = 1 << (signal.SIGSTOP - 1)
    try:
        with open(f"{PROC}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith((b"SigPnd:", b"ShdPnd:")) and int(line.split()[1], 16) & bit:
                    return True
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return False


def live_stats(pids: Iterable[int]) -> list[ProcStat]:
    """The stats of those of ``pids`` that still live (not gone, not zombies)."""
    stats = (read_stat(pid) for pid in pids)
    return [s for s in stats if s is not None and s.state not in GONE_STATES]


class StopWait:
    """Polling for a stop to be confirmed: each :meth:`next` sleeps a little
    longer (0.5 ms doubling up to 2 ms: a poll reads only the members' own
    ``stat``, and a longer sleep would be added whole to the PAUSE), and
    raises TimeoutError naming ``what`` once ``timeout_s`` has passed."""

    def __init__(self, timeout_s: float, what: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.what = what
        self.delay = 0.0005

    async def next(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"{self.what} did not stop in time")
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.002)


def is_stopped(stat: ProcStat) -> bool:
    """Stopped, or certain to stop before it runs another user instruction.

    The second case is a process in uninterruptible sleep (``D``) with SIGSTOP
    pending: typically the parent of a ``vfork`` whose child was stopped before
    it could exec. It cannot reach state ``T`` until the child runs again, yet
    it will stop the moment it leaves the kernel, so it runs no code while the
    group is paused.
    """
    return stat.state in STOPPED_STATES or (stat.state == "D" and stop_pending(stat.pid))


def group_stopped(pgid: int) -> tuple[bool, int]:
    """Whether every live member of the group is stopped, and how many live."""
    members = group_members(pgid)
    return all(is_stopped(m) for m in members), len(members)


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, to tell PID reuse apart."""
    stat = read_stat(pid)
    return None if stat is None else stat.start_ticks


def environ_has(pid: int, marker: bytes) -> bool:
    """Whether the environment of ``pid`` holds the entry ``marker`` (``NAME=value``)."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def pids_with_env(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker``, not counting zombies."""
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        if environ_has(pid, marker):
            stat = read_stat(pid)
            if stat is not None and stat.state not in GONE_STATES:
                found.append(pid)
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
