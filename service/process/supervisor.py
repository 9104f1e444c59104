"""The registry of every execution and connection, and the tasks that run them.

The :class:`Supervisor` enforces the execution limits, keeps a handle on every
task it starts (one ``supervise`` task per execution, one detach timer per
orphaned execution), remembers finished executions for ``status`` for a while,
and shuts everything down with a deadline.

Ownership: the connection that starts an execution owns it; ``attach`` adds
owners. When the last owner goes away, a live execution is cancelled after
``detach_grace_s`` unless an owner attaches in the meantime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from service.errors import InvalidState, LimitReached, NotFound
from service.process.containment import Containment
from service.process.execution import Execution, ExecutionObserver
from service.process.hold import GatePipe, Held
from service.process.launcher import Launcher
from service.process.pgroup import ProcessGroupContainment
from service.process.sinks import Sink
from service.process.spawn import ExecutionSpec
from service.process.state import ExecutionState
from service.settings import Settings

logger = logging.getLogger(__name__)


class Admission(Protocol):
    """Something that must know of an execution before any of it runs (the store).

    :meth:`admit` is awaited after the limits are checked, while the child is
    spawned and held before its exec (:mod:`service.process.hold`): nothing of
    the client's program runs before it returned, or before it called
    ``committed``. Raising refuses the execution: the held child exits
    untouched, the error reaches the client (an
    :class:`~service.errors.RpcError` with its own code), and the supervisor
    forgets it. Whatever :meth:`admit` left behind on failure (a record that
    may still land) is its own to close.

    ``committed`` (given to the last admission only) may be called once, from
    any thread, as soon as the admission can no longer refuse (the store's
    writer thread, right after the commit): it lets the held child exec at
    once, without waiting for the event loop to hear of the commit. An
    admission that called it must not refuse afterwards.
    """

    async def admit(
        self, execution: Execution, committed: Callable[[], None] | None = None
    ) -> None: ...


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        containment: Containment | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.settings = settings
        #: How executions are kept together (process groups unless told otherwise).
        self.containment = containment or ProcessGroupContainment(settings)
        #: How children are started (the exec shim when it was built).
        self.launcher = launcher or Launcher(nice=settings.child_nice)
        self.started_at = time.time()
        self.live: dict[str, Execution] = {}
        self.finished: OrderedDict[str, Execution] = OrderedDict()
        self.owners: defaultdict[str, set[Sink]] = defaultdict(set)
        #: Observers attached to every new execution (the store, for one).
        self.observers: list[ExecutionObserver] = []
        #: Awaited in turn before every spawn (the store records the execution
        #: first, so a server killed at any moment leaves nothing unknown).
        self.admissions: list[Admission] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._detach_timers: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    async def startup(self) -> None:
        """Start the containment (ending what an earlier process of this server
        left in its own subtree); before the first execution."""
        await self.containment.start()

    # --- tasks -------------------------------------------------------------------

    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task that the supervisor keeps, logs if it fails, and cancels
        at shutdown."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    # --- executions ------------------------------------------------------------

    def owned_by(self, owner: Sink) -> list[Execution]:
        """Executions (live and remembered finished ones) owned by ``owner``."""
        found = [e for e in self.live.values() if owner in self.owners.get(e.id, ())]
        found += [e for e in self.finished.values() if owner in self.owners.get(e.id, ())]
        return found

    def live_owned_by(self, owner: Sink) -> list[Execution]:
        return [e for e in self.live.values() if owner in self.owners.get(e.id, ())]

    def get(self, execution_id: str) -> Execution:
        execution = self.live.get(execution_id) or self.finished.get(execution_id)
        if execution is None:
            raise NotFound(f"execution not found: {execution_id}", {"execution_id": execution_id})
        return execution

    def check_capacity(self, owner: Sink) -> None:
        """Raise LimitReached when ``owner`` may not start another execution."""
        if self._closing:
            raise LimitReached("the server is shutting down")
        if len(self.live) >= self.settings.max_executions:
            raise LimitReached(
                f"too many executions on this server (max {self.settings.max_executions})"
            )
        owned = len(self.live_owned_by(owner))
        if owned >= self.settings.max_executions_per_connection:
            limit = self.settings.max_executions_per_connection
            raise LimitReached(f"too many executions on this connection (max {limit})")

    async def start(
        self,
        spec: ExecutionSpec,
        owner: Sink,
        observers: list[ExecutionObserver] | None = None,
    ) -> Execution:
        """Check limits, admit (the store records it), spawn, register, and start
        supervising. OSError when the command cannot be executed; an admission's
        error when it refuses (then the execution never existed)."""
        self.check_capacity(owner)
        execution = Execution(spec, self.settings, self.containment, self.launcher)
        execution.observers.extend(self.observers)
        execution.observers.extend(observers or [])
        execution.sinks.add(owner)
        self.owners[execution.id].add(owner)
        # Live while it is admitted, so the limits count it.
        self.live[execution.id] = execution
        # The admissions run while the child is spawned and held before its exec
        # (service.process.hold): the commit's wait and the spawn overlap.
        held = None
        if self.admissions:
            pipe = GatePipe()
            held = Held(asyncio.ensure_future(self._admit(execution, pipe)), pipe)
        gate = held.admitted if held is not None else None
        try:
            await execution.start(held)
        except BaseException:
            if gate is not None and not gate.done():
                gate.cancel()
            refused = gate is not None and (not gate.done() or gate.cancelled())
            refused = refused or (gate is not None and gate.exception() is not None)
            if refused and execution.state is ExecutionState.STARTING:
                # Never recorded (or its record was ended): forget it.
                self.live.pop(execution.id, None)
                self.owners.pop(execution.id, None)
                execution.finished.set()  # a shutdown waiting on it need not
            else:
                self._retire(execution)
            raise
        self.spawn_task(self._supervise(execution), name=f"execution:{execution.id}")
        return execution

    async def _admit(self, execution: Execution, pipe: GatePipe) -> None:
        """Every admission in turn; refused once the shutdown began meanwhile.
        The last one may open ``pipe`` from its own thread (see :class:`Admission`)."""

        def committed() -> None:
            if not self._closing:
                pipe.open()

        last = len(self.admissions) - 1
        for index, admission in enumerate(self.admissions):
            await admission.admit(execution, committed if index == last else None)
        if self._closing:
            # Shutdown began while the store recorded it: end its record too.
            execution.refuse("the server is shutting down")
            raise LimitReached("the server is shutting down")

    async def _supervise(self, execution: Execution) -> None:
        try:
            await execution.supervise()
        finally:
            self._retire(execution)

    def _retire(self, execution: Execution) -> None:
        self.live.pop(execution.id, None)
        timer = self._detach_timers.pop(execution.id, None)
        if timer is not None:
            timer.cancel()
        self.finished[execution.id] = execution
        while len(self.finished) > self.settings.finished_kept:
            old_id, _ = self.finished.popitem(last=False)
            self.owners.pop(old_id, None)

    def newest_finished(self) -> str | None:
        """The id of the execution that finished last (None before any)."""
        return next(reversed(self.finished), None)

    def counts_by_state(self) -> dict[str, int]:
        counts = {state.value: 0 for state in ExecutionState}
        for execution in (*self.live.values(), *self.finished.values()):
            counts[execution.state.value] += 1
        return counts

    # --- ownership ---------------------------------------------------------------

    def add_owner(self, execution: Execution, owner: Sink) -> None:
        self.owners[execution.id].add(owner)
        execution.sinks.add(owner)
        timer = self._detach_timers.pop(execution.id, None)
        if timer is not None:
            timer.cancel()
            execution.log.info("owner attached; detach timer stopped")

    def forget_connection(self, owner: Sink) -> None:
        """A connection closed: stop sending to it and arm detach timers for
        live executions it leaves without an owner."""
        for execution in list(self.live.values()):
            execution.sinks.remove(owner)
            owners = self.owners.get(execution.id)
            if owners is None or owner not in owners:
                continue
            owners.discard(owner)
            if not owners and execution.id not in self._detach_timers:
                self._detach_timers[execution.id] = self.spawn_task(
                    self._detach_later(execution), name=f"detach:{execution.id}"
                )
        for execution in self.finished.values():
            execution.sinks.remove(owner)
            self.owners.get(execution.id, set()).discard(owner)

    async def _detach_later(self, execution: Execution) -> None:
        grace = self.settings.detach_grace_s
        execution.log.info("last owner gone; cancelling after grace", extra={"grace_s": grace})
        await asyncio.sleep(grace)
        self._detach_timers.pop(execution.id, None)
        if execution.state.is_live:
            try:
                await execution.cancel("no owner connected")
            except InvalidState as exc:
                # It ended (or began ending) while the timer slept: nothing to do.
                execution.log.info("detach cancel not needed: %s", exc.message)

    # --- shutdown ----------------------------------------------------------------

    async def shutdown(self) -> None:
        """Cancel every execution with the ladder and wait for them to finish
        within ``kill_grace_s`` plus a margin; past that, SIGKILL via task
        cancellation. Every supervisor task is done when this returns."""
        self._closing = True
        live = list(self.live.values())
        for execution in live:
            if execution.state.is_live:
                try:
                    await execution.cancel("server shutting down")
                except InvalidState as exc:
                    # Already ending; the wait below covers it all the same.
                    execution.log.info("shutdown cancel not needed: %s", exc.message)
        deadline = self.settings.kill_grace_s + 0.5
        waits = [asyncio.create_task(e.finished.wait()) for e in live]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.containment.close()
        self.launcher.close()
        logger.info("supervisor stopped", extra={"executions": len(live)})
