"""The observer that writes every execution and its transcript to the store.

:class:`Recorder` is attached to every execution (``supervisor.observers``).
It waits once per execution: :meth:`Recorder.admit` (a supervisor admission)
commits the execution's row before its spawn. After that it runs on the event
loop and never waits: a transition becomes a write job,
output chunks are gathered for up to ``FLUSH_INTERVAL_S`` (or ``FLUSH_BYTES``)
and go to the writer as one job. Jobs reach the writer in the order the recorder saw
the events, so a chunk is never stored before its execution's row, and an
execution's final state is never stored before its last chunk.

Each execution stores at most ``max_transcript_bytes`` of output; past that,
chunks are counted (``unstored_chunks``, ``unstored_bytes``) and not stored.
When the writer falls behind by more than ``store_queue_chunks`` chunks, the
executions producing output are throttled through ``Execution.flow`` until the
queue drains: their children block on a full pipe; the event loop does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.errors import StoreUnavailable
from service.process.execution import Execution
from service.process.sinks import Chunk
from service.process.state import ExecutionState
from service.store.database import Store, StoreError

if TYPE_CHECKING:
    from service.process.supervisor import Supervisor

logger = logging.getLogger(__name__)

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
#: Chunks are gathered for this long, or up to this many bytes, per write job:
#: few large jobs cost the event loop far less (GIL hand-offs) than many small
#: ones. A crash can cost the transcript this much of its end; a transition or
#: an attach flushes at once.
FLUSH_INTERVAL_S = 0.05
FLUSH_BYTES = 4 * 1024 * 1024


def read_boot_id() -> str | None:
    """The kernel's boot id: start ticks from ``/proc`` compare only within one boot."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


@dataclass(slots=True)
class Tally:
    """What the recorder knows of one live execution's transcript."""

    stored_chunks: int = 0
    stored_bytes: int = 0
    unstored_chunks: int = 0
    unstored_bytes: int = 0
    capped: bool = False


ChunkRow = tuple[str, int, str, str, int, int, float]

INSERT_EXECUTION = """
INSERT INTO executions (
    id, connection_id, server_id, boot_id, command, argv, cwd, project_id, state, reason,
    pid, pgid, start_ticks, exit_code, signal, created_at, started_at, ended_at, updated_at,
    stdout_bytes, stderr_bytes, last_seq
) VALUES (
    :id, :connection_id, :server_id, :boot_id, :command, :argv, :cwd, :project_id, :state,
    :reason, :pid, :pgid, :start_ticks, :exit_code, :signal, :created_at, :started_at,
    :ended_at, :updated_at, :stdout_bytes, :stderr_bytes, :last_seq
)
"""

UPDATE_EXECUTION = """
UPDATE executions SET
    state = :state, reason = :reason, pid = :pid, pgid = :pgid, start_ticks = :start_ticks,
    exit_code = :exit_code, signal = :signal, started_at = :started_at, ended_at = :ended_at,
    updated_at = :updated_at, stdout_bytes = :stdout_bytes, stderr_bytes = :stderr_bytes,
    last_seq = :last_seq, stored_chunks = :stored_chunks, stored_bytes = :stored_bytes,
    unstored_chunks = :unstored_chunks, unstored_bytes = :unstored_bytes
WHERE id = :id
"""

ABANDON_EXECUTION = """
UPDATE executions SET
    state = 'failed', reason = 'not started: execute was refused before the spawn',
    ended_at = :now, updated_at = :now
WHERE id = :id AND state = 'starting'
"""

INSERT_CHUNK = """
INSERT OR IGNORE INTO chunks (execution_id, seq, stream, data, nbytes, truncated, ts)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

UPDATE_COUNTS = """
UPDATE executions SET
    last_seq = :last_seq, stdout_bytes = :stdout_bytes, stderr_bytes = :stderr_bytes,
    stored_chunks = :stored_chunks, stored_bytes = :stored_bytes,
    unstored_chunks = :unstored_chunks, unstored_bytes = :unstored_bytes, updated_at = :updated_at
WHERE id = :id
"""


class Recorder:
    """An ExecutionObserver that keeps executions and transcripts in ``store``."""

    def __init__(self, store: Store, supervisor: Supervisor) -> None:
        self.store = store
        self.supervisor = supervisor
        self.cap_bytes = store.settings.max_transcript_bytes
        #: This server process, so restart recovery knows what an earlier one left.
        self.server_id = uuid.uuid4().hex
        self.boot_id = read_boot_id()
        self.tallies: dict[str, Tally] = {}
        self._rows: list[ChunkRow] = []
        self._rows_bytes = 0
        self._dirty: dict[str, Execution] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._throttled: dict[str, Execution] = {}
        self.failed_jobs = 0
        store.on_drain(self._release)

    # --- Admission (service.process.supervisor) ---------------------------------------

    async def admit(self, execution: Execution) -> None:
        """Record ``execution`` (state ``starting``) and return once the row is
        committed; the supervisor spawns only then. Restart recovery thus knows
        every execution a killed server may have left processes of: by the id
        it finds the marker in their environment and, on the cgroup backend,
        their leaf cgroup (both are named by it; the pid comes with ``running``).

        :class:`~service.errors.StoreUnavailable` (-32007) when the store cannot
        take the row within ``store_record_timeout_s``: nothing runs unrecorded.
        """
        if not self.store.is_open:
            raise StoreUnavailable("the store is closed; the execution was not started")
        timeout_s = self.store.settings.store_record_timeout_s
        insert = _run(INSERT_EXECUTION, self._first_row(execution, Tally()))
        try:
            await asyncio.wait_for(self.store.write(insert), timeout_s)
        except BaseException as exc:
            self._abandon(execution)
            if isinstance(exc, TimeoutError):
                message = f"the store did not record the execution within {timeout_s:g}s"
            elif isinstance(exc, StoreError | sqlite3.Error | OSError):
                message = f"the store cannot record the execution: {exc}"
            else:
                raise
            raise StoreUnavailable(f"{message}; it was not started") from None
        self.tallies.setdefault(execution.id, Tally())

    def _abandon(self, execution: Execution) -> None:
        """The row may still be committed after a refusal (the job stays queued):
        end it, so nothing is left ``starting`` by a server that is still up."""
        ended = {"id": execution.id, "now": time.time()}
        with contextlib.suppress(StoreError):
            self.store.submit(_run(ABANDON_EXECUTION, ended))

    # --- ExecutionObserver -------------------------------------------------------

    def on_transition(self, execution: Execution) -> None:
        if not self.store.is_open:
            return
        self.flush()
        first = execution.id not in self.tallies
        tally = self.tallies.setdefault(execution.id, Tally())
        if first:
            # Not admitted (started without the supervisor's admissions).
            self.store.submit(_run(INSERT_EXECUTION, self._first_row(execution, tally)))
            if not execution.state.is_final:
                return
        self.store.submit(_run(UPDATE_EXECUTION, self._row(execution, tally)))
        if execution.state.is_final:
            self.tallies.pop(execution.id, None)
            self._dirty.pop(execution.id, None)
            throttled = self._throttled.pop(execution.id, None)
            if throttled is not None:
                throttled.flow.set()

    def on_output(self, execution: Execution, chunk: Chunk) -> None:
        tally = self.tallies.get(execution.id)
        if tally is None or not self.store.is_open:
            return
        if tally.capped or tally.stored_bytes + chunk.nbytes > self.cap_bytes:
            tally.unstored_chunks += 1
            tally.unstored_bytes += chunk.nbytes
            if not tally.capped:
                tally.capped = True
                logger.warning(
                    "transcript cap reached; further chunks are counted, not stored",
                    extra={
                        "execution_id": execution.id,
                        "max_transcript_bytes": self.cap_bytes,
                        "seq": chunk.seq,
                    },
                )
        else:
            tally.stored_chunks += 1
            tally.stored_bytes += chunk.nbytes
            self._rows.append(
                (
                    execution.id,
                    chunk.seq,
                    chunk.stream,
                    chunk.data,
                    chunk.nbytes,
                    int(chunk.truncated),
                    chunk.ts,
                )
            )
            self._rows_bytes += chunk.nbytes
        self._dirty[execution.id] = execution
        if self._rows_bytes >= FLUSH_BYTES:
            self.flush()
        elif self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(FLUSH_INTERVAL_S, self.flush)
        if self.store.congested or len(self._rows) >= self.store.settings.store_queue_chunks:
            if execution.id not in self._throttled and execution.state.is_live:
                logger.warning(
                    "store writer is behind; throttling output",
                    extra={"execution_id": execution.id, "backlog": self.store.backlog},
                )
                self._throttled[execution.id] = execution
                execution.flow.clear()

    # --- writing -------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the gathered chunks and counters to the writer (one job)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._rows and not self._dirty:
            return
        rows, self._rows = self._rows, []
        nbytes, self._rows_bytes = self._rows_bytes, 0
        counts = [self._counts(e, self.tallies[e.id]) for e in self._dirty.values()]
        self._dirty = {}
        if not self.store.is_open:
            return

        def job(conn: sqlite3.Connection) -> None:
            if rows:
                conn.executemany(INSERT_CHUNK, rows)
            if counts:
                conn.executemany(UPDATE_COUNTS, counts)

        self.store.submit(job, weight=max(1, len(rows)), nbytes=nbytes)

    async def sync(self) -> None:
        """Return once everything the recorder has seen so far is committed."""
        self.flush()
        await self.store.write(_nothing)

    def _release(self) -> None:
        if not self._throttled or self.store.congested:
            return
        for execution in self._throttled.values():
            execution.flow.set()
        self._throttled.clear()

    # --- rows --------------------------------------------------------------------------

    def _owner_id(self, execution: Execution) -> str | None:
        owners = self.supervisor.owners.get(execution.id) or ()
        for owner in owners:
            owner_id = getattr(owner, "id", None)
            if isinstance(owner_id, str):
                return owner_id
        return None

    def _first_row(self, execution: Execution, tally: Tally) -> dict[str, Any]:
        row = self._row(execution, tally)
        row["connection_id"] = self._owner_id(execution)
        row["server_id"] = self.server_id
        row["boot_id"] = self.boot_id
        row["command"] = execution.spec.display or None
        row["argv"] = json.dumps(execution.spec.argv)
        row["cwd"] = execution.spec.cwd
        row["project_id"] = execution.spec.project_id
        row["created_at"] = execution.created_at
        return row

    def _row(self, execution: Execution, tally: Tally) -> dict[str, Any]:
        reason = execution.error
        if reason is None and execution.state is ExecutionState.CANCELLED:
            reason = "cancelled"
        row = self._counts(execution, tally)
        row.update(
            state=execution.state.value,
            reason=reason,
            pid=execution.pid,
            pgid=execution.pgid,
            start_ticks=execution.start_ticks,
            exit_code=execution.exit_code,
            signal=execution.signal,
            started_at=execution.started_at,
            ended_at=execution.ended_at,
        )
        return row

    @staticmethod
    def _counts(execution: Execution, tally: Tally) -> dict[str, Any]:
        return {
            "id": execution.id,
            "last_seq": execution.seq,
            "stdout_bytes": execution.stdout_bytes,
            "stderr_bytes": execution.stderr_bytes,
            "stored_chunks": tally.stored_chunks,
            "stored_bytes": tally.stored_bytes,
            "unstored_chunks": tally.unstored_chunks,
            "unstored_bytes": tally.unstored_bytes,
            "updated_at": time.time(),
        }


def _run(sql: str, params: dict[str, Any]) -> Any:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute(sql, params)

    return job


def _nothing(conn: sqlite3.Connection) -> None:
    return None
