"""The cgroup v2 containment backend: one leaf cgroup per execution.

The server owns ``ROOT/cc-executor-<id>/`` (see
:func:`~service.process.containment.subtree_name`) and creates one leaf in it
per execution, named after the execution id, before the spawn. The exec shim
(or the fallback ``preexec_fn``) writes itself into the leaf's
``cgroup.procs`` before it runs the user's program, so every process of the
execution is born inside, and the kernel keeps every descendant there:
``setsid`` and double forks do not leave a cgroup.

* Membership is ``cgroup.procs``; nothing scans ``/proc``. Only the members'
  own ``stat`` is read, to confirm a PAUSE.
* "Alive" is ``populated 1`` in ``cgroup.events``. The kernel reports each
  change of that file as an inotify modify event; one inotify descriptor for
  the whole server wakes exactly the tree whose file changed.
* PAUSE sends SIGSTOP to every member until a read of the leaf shows no new
  one (a process with SIGSTOP pending cannot fork); only when a fork storm
  keeps adding members does it freeze the leaf first (nothing can fork or
  exit then), signal, and thaw. It answers once every member is in state
  ``T``, so PAUSE keeps the signal semantics the protocol promises (a stopped
  process is continued by SIGCONT, which RESUME sends).
* The last rung of the kill ladder is ``cgroup.kill``: one write kills the
  whole tree, whatever it forks meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from asyncinotify import Inotify, Mask, Watch

from service.process import procfs
from service.process.containment import ContainmentName, TreeGone
from service.process.ladder import terminate
from service.settings import Settings

logger = logging.getLogger(__name__)

#: How long one leaf left by an earlier server gets to die before the server goes on.
LEFTOVER_KILL_WAIT_S = 5.0
#: Reads of a leaf during a PAUSE without freezing before it is frozen instead.
STOP_ROUNDS = 4


def _read_events(path: str) -> dict[str, int]:
    try:
        with open(f"{path}/cgroup.events", encoding="ascii") as handle:
            return {key: int(value) for key, value in (line.split() for line in handle)}
    except FileNotFoundError:
        return {"populated": 0, "frozen": 0}


def _write(path: str, name: str, value: str) -> None:
    with open(f"{path}/{name}", "w", encoding="ascii") as handle:
        handle.write(value)


class CgroupTree:
    """One execution's leaf cgroup (see :class:`~service.process.containment.Tree`)."""

    def __init__(self, manager: CgroupContainment, path: str) -> None:
        self.path = path
        self.procs_file: str | None = f"{path}/cgroup.procs"
        self.pid: int | None = None
        self._manager = manager
        self._changed = asyncio.Event()
        self._watch: Watch | None = None
        self._released = False

    def watch(self, inotify: Inotify) -> None:
        self._watch = inotify.add_watch(f"{self.path}/cgroup.events", Mask.MODIFY)

    def notify(self) -> None:
        self._changed.set()

    def attach(self, pid: int) -> None:
        self.pid = pid

    def members(self) -> list[int]:
        """The pids in the leaf (zombies are not members)."""
        try:
            with open(f"{self.path}/cgroup.procs", encoding="ascii") as handle:
                return [int(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []

    def alive(self) -> bool:
        return _read_events(self.path).get("populated", 0) == 1

    def signal(self, signum: int) -> bool:
        """Signal each member (see :meth:`_signal_pids`); False when none is left."""
        pids = self.members()
        self._signal_pids(pids, signum)
        return bool(pids)

    def _signal_pids(self, pids: Iterable[int], signum: int) -> None:
        """Signal those of ``pids`` that are members, each pinned by a pidfd
        opened *before* the leaf is read again: a pid still listed then is the
        pinned process, so a pid reused by a process outside the leaf is never
        hit (one read of the leaf instead of one ``/proc/PID/cgroup`` each)."""
        pinned: dict[int, int] = {}
        try:
            for pid in pids:
                with contextlib.suppress(OSError):
                    pinned[pid] = os.pidfd_open(pid)
            if not pinned:
                return
            for pid in set(self.members()) & pinned.keys():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(pinned[pid], signum)
        finally:
            for pidfd in pinned.values():
                os.close(pidfd)

    async def _wait_until(
        self, done: Callable[[dict[str, int]], bool], timeout_s: float | None
    ) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._changed.clear()
            if done(_read_events(self.path)):
                return True
            if deadline is None:
                await self._changed.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return done(_read_events(self.path))

    async def wait_empty(self, timeout_s: float | None) -> bool:
        return await self._wait_until(lambda events: events.get("populated", 0) == 0, timeout_s)

    async def stop(self, timeout_s: float) -> None:
        wait = procfs.StopWait(timeout_s, "the members")
        try:
            if not self._stop_unfrozen():
                await self._stop_frozen(timeout_s)
            while True:
                live = procfs.live_stats(self.members())
                if not live:
                    raise TreeGone
                running = [s.pid for s in live if not procfs.is_stopped(s)]
                if not running:
                    return
                # Continued by a member that was not yet stopped itself: again.
                self._signal_pids(running, signal.SIGSTOP)
                await wait.next()
        except BaseException:
            self.signal(signal.SIGCONT)
            raise

    def _stop_unfrozen(self) -> bool:
        """SIGSTOP every member, reading the leaf again until it holds none that
        was not signalled; False when it still grows after
        :data:`STOP_ROUNDS` reads (a fork storm: freeze then).

        A process with SIGSTOP pending cannot fork (the kernel undoes the fork
        and restarts it after the stop), so each read finds only children forked
        before their parent got the signal, and the reads converge. Freezing
        first would make every member run twice (to freeze, then to stop) before
        the PAUSE is answered; on a busy machine each time is a wait for a CPU.
        """
        signalled: set[int] = set()
        for _ in range(STOP_ROUNDS):
            new = set(self.members()) - signalled
            if not new:
                if not signalled:
                    raise TreeGone
                return True
            self._signal_pids(new, signal.SIGSTOP)
            signalled |= new
        return False

    async def _stop_frozen(self, timeout_s: float) -> None:
        """SIGSTOP every member while the leaf is frozen: nothing can fork or
        exit mid-way, so the pids read are exact."""
        _write(self.path, "cgroup.freeze", "1")
        try:
            frozen = await self._wait_until(
                lambda e: e.get("frozen", 0) == 1 or e.get("populated", 0) == 0, timeout_s
            )
            if not frozen:
                raise TimeoutError("the cgroup did not freeze in time")
            pids = self.members()
            if not pids:
                raise TreeGone
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
        finally:
            with contextlib.suppress(FileNotFoundError):
                _write(self.path, "cgroup.freeze", "0")

    def kill(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            _write(self.path, "cgroup.kill", "1")

    def release(self) -> None:
        """Remove the leaf; a leaf that still holds processes is killed and left to
        the manager, which removes it once empty (at the latest at close)."""
        if self._released:
            return
        self._released = True
        self._manager.forget(self)
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            self.kill()
            self._manager.busy.add(self.path)


class CgroupContainment:
    """The server's subtree; see the module docstring."""

    name: ContainmentName = "cgroup"

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        #: Leaves that could not be removed yet (killed, not yet empty).
        self.busy: set[str] = set()
        self._trees: dict[str, CgroupTree] = {}
        self._inotify: Inotify | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        self._inotify = Inotify()
        self._task = asyncio.create_task(self._dispatch(), name="cgroup:events")
        leftovers = sorted(entry.path for entry in os.scandir(self.path) if entry.is_dir())
        if leftovers:
            await asyncio.gather(*(self._end_leftover(path) for path in leftovers))
        logger.info("containment: cgroup", extra={"cgroup": str(self.path)})

    async def _end_leftover(self, path: str) -> None:
        tree = self._track(CgroupTree(self, path))
        members = tree.members()
        logger.warning(
            "ending a cgroup left by an earlier server process",
            extra={"cgroup": path, "pids": members},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                terminate(tree, self.settings.kill_grace_s, logger), LEFTOVER_KILL_WAIT_S
            )
        tree.release()

    def _track(self, tree: CgroupTree) -> CgroupTree:
        assert self._inotify is not None, "start() first"
        tree.watch(self._inotify)
        self._trees[f"{tree.path}/cgroup.events"] = tree
        return tree

    def forget(self, tree: CgroupTree) -> None:
        # No inotify_rm_watch: it waits for an RCU grace period (milliseconds,
        # on the event loop); removing the leaf drops its watch in the kernel.
        self._trees.pop(f"{tree.path}/cgroup.events", None)
        self._retry_busy()

    def open(self, execution_id: str) -> CgroupTree:
        path = f"{self.path}/{execution_id}"
        os.mkdir(path)
        return self._track(CgroupTree(self, path))

    async def _dispatch(self) -> None:
        assert self._inotify is not None
        async for event in self._inotify:
            if event.watch is None:
                continue
            tree = self._trees.get(str(event.watch.path))
            if tree is not None:
                tree.notify()

    def _retry_busy(self) -> None:
        for path in list(self.busy):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                self.busy.discard(path)
            except OSError:
                continue
            else:
                self.busy.discard(path)

    async def close(self) -> None:
        deadline = time.monotonic() + 2.0
        for tree in list(self._trees.values()):
            tree.kill()
            tree.release()
        while self.busy and time.monotonic() < deadline:
            self._retry_busy()
            if self.busy:
                await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inotify is not None:
            self._inotify.close()
        try:
            os.rmdir(self.path)
        except OSError as exc:
            logger.warning(
                "cannot remove the server's cgroup",
                extra={"cgroup": str(self.path), "error": str(exc)},
            )
