"""The process-group containment backend, where no cgroup can be had.

An execution is its process group (the leader starts a new session, so its
pgid is its pid), plus the processes that left the group (``setsid``, double
fork). Those are found two ways: the server is the child subreaper (see
:mod:`service.process.reaper`), so they stay its descendants, and every
process of an execution carries the environment marker
:data:`~service.process.spawn.EXECUTION_MARKER` with its id.

Cost: one pass over ``/proc`` finds every group member and escapee of every
execution. That pass is shared: :meth:`ProcessGroupContainment.scan` reads
``/proc`` at most once per :data:`SCAN_MAX_AGE_S` for the whole server,
however many executions ask, and indexes it by process group and by marker.
Only a descendant of the server that is in no execution's group has its
environment read, once per process (cached by pid and start time). The
leader's own exit is a pidfd event (see :mod:`service.process.child`), never
a scan.

PAUSE, RESUME and CANCEL read no pass at all while the server is the
subreaper: they walk the execution's own tree (:meth:`ProcessGroupTree._walk`:
``/proc/PID/task/*/children`` from the leader, and from those of the server's
children that are the execution's orphans), so a control costs the size of
its tree, not of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from service.process import procfs
from service.process.containment import ContainmentName, TreeGone
from service.process.reaper import is_subreaper, marker_entry, marker_of
from service.settings import Settings

logger = logging.getLogger(__name__)

#: A ``/proc`` pass younger than this is reused by every tree that asks.
SCAN_MAX_AGE_S = 0.05

Stats = dict[int, procfs.ProcStat]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One ``/proc`` pass, indexed for every tree at once (live processes only)."""

    stats: Stats
    by_pgid: dict[int, list[int]]
    by_marker: dict[str, list[int]]


def descendants(stats: Stats, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


class ProcessGroupTree:
    """One execution's group and escapees (see :class:`~service.process.containment.Tree`)."""

    procs_file: str | None = None

    def __init__(
        self,
        manager: ProcessGroupContainment,
        execution_id: str,
        registry: dict[str, ProcessGroupTree],
    ) -> None:
        self.execution_id = execution_id
        self.pgid: int | None = None
        self._manager = manager
        self._registry = registry
        self._entry = marker_entry(execution_id)

    def attach(self, pid: int) -> None:
        self.pgid = pid

    def _members(self, snapshot: Snapshot) -> list[int]:
        """Live processes of the execution: its group's and the escapees."""
        group = snapshot.by_pgid.get(self.pgid, []) if self.pgid is not None else []
        return group + self._escaped(snapshot)

    def _escaped(self, snapshot: Snapshot) -> list[int]:
        return [
            pid
            for pid in snapshot.by_marker.get(self.execution_id, [])
            if snapshot.stats[pid].pgid != self.pgid
        ]

    def _signal_group(self, signum: int) -> bool:
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            # A member changed its uid: the group exists, but is not ours to signal.
            logger.warning("no permission to signal the group", extra={"pgid": self.pgid})
        return True

    def _walk(self) -> list[procfs.ProcStat] | None:
        """This execution's live processes, found from the processes themselves
        (cost: the tree's size, not the machine's): the group's leader and the
        server's own children (the subreaper adopts orphans) that are in the
        group or carry the marker, and all their descendants, read from
        ``/proc/PID/task/*/children``. None without the subreaper: an orphan
        may then be anywhere, and only a ``/proc`` pass finds it."""
        if not is_subreaper() or self.pgid is None:
            return None
        others = self._manager.leaders() - {self.pgid}
        roots: list[int] = []
        for pid in procfs.children_of(os.getpid()):
            if pid in others:
                continue  # another execution's leader
            stat = procfs.read_stat(pid)
            if stat is None or stat.state in procfs.GONE_STATES:
                continue
            if stat.pgid == self.pgid or self._manager.marker(stat) == self.execution_id:
                roots.append(pid)
        found: set[int] = set()
        while roots:
            pid = roots.pop()
            if pid not in found:
                found.add(pid)
                roots.extend(procfs.children_of(pid))
        return procfs.live_stats(found)

    def _current(self) -> list[int]:
        """The live members now: a walk of the tree, or a fresh ``/proc`` pass."""
        walked = self._walk()
        if walked is None:
            return self._members(self._manager.scan(fresh=True))
        return [stat.pid for stat in walked]

    def _signal_escaped(self, signum: int) -> int:
        """Each escapee is pinned by a pidfd and its marker checked again before
        the signal, so a pid reused between the scan and the signal is never hit."""
        sent = 0
        walked = self._walk()
        if walked is None:
            escaped = self._escaped(self._manager.scan())
        else:
            escaped = [stat.pid for stat in walked if stat.pgid != self.pgid]
        for pid in escaped:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            except OSError:  # no pidfd support: plain kill, with the small reuse window
                if procfs.environ_has(pid, self._entry):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signum)
                        sent += 1
                continue
            try:
                if procfs.environ_has(pid, self._entry):
                    signal.pidfd_send_signal(pidfd, signum)
                    sent += 1
            except (ProcessLookupError, PermissionError):
                pass
            finally:
                os.close(pidfd)
        return sent

    def signal(self, signum: int) -> bool:
        group = self._signal_group(signum)
        escaped = self._signal_escaped(signum) > 0
        return group or escaped

    def alive(self) -> bool:
        return bool(self._members(self._manager.scan()))

    async def wait_empty(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.005
        while self.alive():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True

    async def stop(self, timeout_s: float) -> None:
        """SIGSTOP the group and the escapees, then confirm by reading only the
        members' own ``stat``; one more walk of the tree at the end catches a
        member forked between the signal and the stop (stopped in turn)."""
        wait = procfs.StopWait(timeout_s, "the process group")
        try:
            self.signal(signal.SIGSTOP)
            members = self._current()
            while True:
                if not members:
                    raise TreeGone
                live = procfs.live_stats(members)
                if all(procfs.is_stopped(s) for s in live):
                    everyone = self._current()
                    if set(everyone) <= set(members):
                        if not live:
                            raise TreeGone
                        return
                    members = everyone
                    self.signal(signal.SIGSTOP)
                    continue
                await wait.next()
        except BaseException:
            self.signal(signal.SIGCONT)
            raise

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def release(self) -> None:
        """Forget the tree (a process group ends with its last member)."""
        self._registry.pop(self.execution_id, None)


class ProcessGroupContainment:
    """Process groups, the marker and the subreaper; see the module docstring."""

    name: ContainmentName = "process-group"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scans = 0
        self._snapshot = Snapshot({}, {}, {})
        self._scanned_at = -1.0
        self._trees: dict[str, ProcessGroupTree] = {}
        #: The marker of each process whose environment was read, by (pid, start time).
        self._markers: dict[tuple[int, int], str | None] = {}

    def scan(self, *, fresh: bool = False) -> Snapshot:
        """Every live process, from one ``/proc`` pass shared by the whole
        server (reused for :data:`SCAN_MAX_AGE_S` unless ``fresh``)."""
        now = time.monotonic()
        if fresh or now - self._scanned_at > SCAN_MAX_AGE_S:
            self._snapshot = self._index()
            self._scanned_at = time.monotonic()
            self.scans += 1
        return self._snapshot

    def _index(self) -> Snapshot:
        me = os.getpid()
        stats = {}
        for pid in procfs.all_pids():
            stat = procfs.read_stat(pid)
            if stat is not None:
                stats[pid] = stat
        live = {
            pid: s for pid, s in stats.items() if s.state not in procfs.GONE_STATES and pid != me
        }
        if is_subreaper():
            # Every process of an execution is a descendant of the server, so a
            # group id reused by a stranger after the group died never counts.
            ours = descendants(stats, me)
            live = {pid: s for pid, s in live.items() if pid in ours}
        by_pgid: dict[int, list[int]] = {}
        for pid, stat in live.items():
            by_pgid.setdefault(stat.pgid, []).append(pid)
        leaders = self.leaders()
        by_marker: dict[str, list[int]] = {}
        markers: dict[tuple[int, int], str | None] = {}
        for pid, stat in live.items():
            if stat.pgid in leaders:
                continue  # in an execution's group: found by group, not by marker
            key = (pid, stat.start_ticks)
            marker = self._markers[key] if key in self._markers else marker_of(pid)
            markers[key] = marker
            if marker is not None:
                by_marker.setdefault(marker, []).append(pid)
        self._markers = markers
        return Snapshot(live, by_pgid, by_marker)

    def leaders(self) -> set[int]:
        """The process groups (leaders' pids) of every execution's tree."""
        return {tree.pgid for tree in self._trees.values() if tree.pgid is not None}

    def marker(self, stat: procfs.ProcStat) -> str | None:
        """The execution marker of a process, read once per pid and start time."""
        key = (stat.pid, stat.start_ticks)
        if key not in self._markers:
            self._markers[key] = marker_of(stat.pid)
        return self._markers[key]

    def open(self, execution_id: str) -> ProcessGroupTree:
        tree = ProcessGroupTree(self, execution_id, self._trees)
        self._trees[execution_id] = tree
        return tree

    async def start(self) -> None:
        logger.info("containment: process-group")

    async def close(self) -> None:
        """Nothing to remove."""
