"""Recording an execution before anything of it runs.

:class:`Registration` is a supervisor admission
(:class:`~service.process.supervisor.Admission`): the supervisor awaits it
after the limits are checked, while the child is spawned and held before its
exec (:mod:`service.process.hold`). It commits the execution's
row, state ``starting``, so restart recovery knows every execution a killed
server may have left processes of: by the id it finds the marker in their
environment and, on the cgroup backend, their leaf cgroup (both are named by
it; the pid comes with ``running``). A store that cannot take the row within
``store_timeout_s``, or is down, refuses the execution with -32007:
nothing runs unrecorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from service.errors import StoreUnavailable
from service.process.execution import Execution
from service.store.errors import StoreError
from service.store.recorder import Recorder
from service.store.rows import Tally

#: A row recorded for an execution whose ``execute`` was then refused.
ABANDON_EXECUTION = """
UPDATE executions SET
    state = 'failed', reason = 'not started: execute was refused before the spawn',
    ended_at = :now, updated_at = :now
WHERE id = :id AND state = 'starting'
"""


class Registration:
    """The store's admission: ``execute`` waits for the execution's row."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def admit(
        self, execution: Execution, committed: Callable[[], None] | None = None
    ) -> None:
        """Return once ``execution``'s row is committed; StoreUnavailable when it
        cannot be (then nothing of it runs). ``committed`` is called in the
        writer thread right after the commit (it lets the held child exec)."""
        store = self.recorder.store
        if not store.is_open:
            raise StoreUnavailable("the store is closed; the execution was not started")
        timeout_s = store.settings.store_timeout_s
        tally = Tally()
        # Decided once, under the lock: landed (the commit came first; the
        # child may exec) or refused (a commit after that opens nothing).
        lock = threading.Lock()
        decided: list[bool] = []

        def on_commit() -> None:
            with lock:
                if decided:
                    return
                decided.append(True)
            if committed is not None:
                committed()

        try:
            await asyncio.wait_for(
                store.write(self.recorder.insert_job(execution, tally), on_commit), timeout_s
            )
        except BaseException as exc:
            with lock:
                if not decided:
                    decided.append(False)
            if not decided[0] or not isinstance(exc, TimeoutError):
                self._abandon(execution)
                if isinstance(exc, TimeoutError):
                    message = f"the store did not record the execution within {timeout_s:g}s"
                elif isinstance(exc, StoreError | OSError):
                    message = f"the store cannot record the execution: {exc}"
                else:
                    raise
                raise StoreUnavailable(f"{message}; it was not started") from None
            # The commit landed (the child may be running): only the loop heard late.
        self.recorder.recorded(execution, tally)

    def _abandon(self, execution: Execution) -> None:
        """The row may still be committed after a refusal (the job stays queued):
        end it, so nothing is left ``starting`` by a server that is still up."""
        ended = {"id": execution.id, "now": time.time()}
        with contextlib.suppress(StoreError):
            self.recorder.store.submit(lambda conn: conn.execute(ABANDON_EXECUTION, ended))
