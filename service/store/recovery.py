"""Restart recovery: what an earlier server process left running.

At start, before the server listens, every execution the store still marks
live (``starting``, ``running``, ``paused``) belongs to an earlier server
process that died without finishing it. Its leftovers are found two ways:

- the leader, when a process with the stored pid still exists *and* has the
  stored start time (``/proc/PID/stat`` field 22) in the same kernel boot;
  a pid reused by an unrelated process is never touched;
- every process whose environment carries the execution's marker
  (``CC_EXECUTOR_EXECUTION_ID=<id>``), which catches children that outlived
  their leader or escaped the group.

Their process groups are ended with the one kill ladder
(:mod:`service.process.ladder`: SIGTERM and SIGCONT, ``kill_grace_s``,
SIGKILL), and the execution is marked ``lost`` with a reason.
Nothing stays ``running`` forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field

from service.process import procfs
from service.process.ladder import terminate
from service.process.spawn import EXECUTION_MARKER
from service.process.state import ExecutionState
from service.store.database import Store
from service.store.dialect import Conn

logger = logging.getLogger(__name__)

LIVE_STATES = tuple(state.value for state in ExecutionState if state.is_live)
MARKER_PREFIX = EXECUTION_MARKER.encode() + b"="


@dataclass
class Leftover:
    """One execution an earlier server left live, and what remains of it."""

    execution_id: str
    pid: int | None
    pgid: int | None
    start_ticks: int | None
    boot_id: str | None
    server_id: str
    state: str
    pids: set[int] = field(default_factory=set)
    groups: set[int] = field(default_factory=set)


def marked_processes() -> dict[str, set[int]]:
    """Live processes carrying an execution marker, by execution id (one /proc scan)."""
    found: defaultdict[str, set[int]] = defaultdict(set)
    me = os.getpid()
    for pid in procfs.all_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(MARKER_PREFIX):
                stat = procfs.read_stat(pid)
                if stat is not None and stat.state not in procfs.GONE_STATES:
                    found[entry[len(MARKER_PREFIX) :].decode(errors="replace")].add(pid)
                break
    return found


def find_leftovers(leftovers: list[Leftover], boot_id: str | None) -> None:
    """Fill in ``pids`` and ``groups`` of each leftover from ``/proc``."""
    marked = marked_processes()
    protected = {os.getpgid(0), 0, 1}
    for item in leftovers:
        item.pids |= marked.get(item.execution_id, set())
        if item.pid is not None and item.start_ticks is not None and item.boot_id == boot_id:
            stat = procfs.read_stat(item.pid)
            if (
                stat is not None
                and stat.start_ticks == item.start_ticks
                and stat.state not in procfs.GONE_STATES
            ):
                item.pids.add(item.pid)
                if item.pgid is not None:
                    item.groups.add(item.pgid)
        for pid in item.pids:
            stat = procfs.read_stat(pid)
            if stat is not None:
                item.groups.add(stat.pgid)
        item.groups -= protected
        item.pids.discard(os.getpid())


class LeftoverTree:
    """What is left of earlier executions, as a
    :class:`~service.process.containment.Killable` for the one kill ladder."""

    def __init__(self, leftovers: list[Leftover]) -> None:
        self.leftovers = leftovers

    def signal(self, signum: int) -> bool:
        for item in self.leftovers:
            for pgid in item.groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signum)
            for pid in item.pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)
        return self.alive()

    def alive(self) -> bool:
        for item in self.leftovers:
            for pid in item.pids:
                stat = procfs.read_stat(pid)
                if stat is not None and stat.state not in procfs.GONE_STATES:
                    return True
            for pgid in item.groups:
                if procfs.group_members(pgid):
                    return True
        return False

    async def wait_empty(self, timeout_s: float | None) -> bool:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 2.0)
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(self.alive):
                return True
            await asyncio.sleep(0.05)
        return not self.alive()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


async def recover(
    store: Store, server_id: str, boot_id: str | None, node_id: str | None = None
) -> list[Leftover]:
    """Kill what earlier server processes of this node left and mark their
    executions ``lost``; the executions recovered. Only rows of ``node_id``
    (NULL: a server alone) are this server's: on a shared database the other
    nodes' live executions are theirs to keep."""

    def load(conn: Conn) -> list[Leftover]:
        marks = ",".join("?" * len(LIVE_STATES))
        # Rows of releases before nodes (NULL) are any node's: SQLite has one
        # server per data directory, and PostgreSQL stores came with nodes.
        node = "node IS NULL" if node_id is None else "(node = ? OR node IS NULL)"
        rows = conn.execute(
            "SELECT id, pid, pgid, start_ticks, boot_id, server_id, state FROM executions "
            f"WHERE state IN ({marks}) AND server_id != ? AND {node}",
            (*LIVE_STATES, server_id, *([] if node_id is None else [node_id])),
        ).fetchall()
        return [Leftover(*row) for row in rows]

    leftovers = await store.read(load)
    if not leftovers:
        return []
    await asyncio.to_thread(find_leftovers, leftovers, boot_id)
    targets = [item for item in leftovers if item.pids or item.groups]
    if targets:
        await terminate(LeftoverTree(targets), store.settings.kill_grace_s, logger)
    now = time.time()
    updates = []
    for item in leftovers:
        killed = len(item.pids)
        reason = f"the server process that ran it ended while it was {item.state}; " + (
            f"{killed} leftover process(es) killed at restart"
            if killed or item.groups
            else "no process of it was left"
        )
        updates.append((ExecutionState.LOST.value, reason, now, now, item.execution_id))
        logger.warning(
            "execution lost by an earlier server process",
            extra={
                "execution_id": item.execution_id,
                "previous_state": item.state,
                "killed_pids": sorted(item.pids),
                "killed_groups": sorted(item.groups),
            },
        )

    def mark(conn: Conn) -> None:
        conn.executemany(
            "UPDATE executions SET state = ?, reason = ?, ended_at = COALESCE(ended_at, ?), "
            "updated_at = ? WHERE id = ?",
            updates,
        )

    await store.write(mark)
    return leftovers
