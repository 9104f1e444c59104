"""The observer that writes every execution and its transcript to the store.

:class:`Recorder` is attached to every execution (``supervisor.observers``);
its first row is committed before the spawn (:mod:`service.store.admission`).
It runs on the event loop and never waits: a transition becomes a write job,
output chunks are gathered for up to ``FLUSH_INTERVAL_S`` (or ``FLUSH_BYTES``)
and go to the writer as one job. Jobs reach the writer in the order the recorder saw
the events, so a chunk is never stored before its execution's row, and an
execution's final state is never stored before its last chunk.

Each execution stores at most ``max_transcript_bytes`` of output; past that,
chunks are counted (``unstored_chunks``, ``unstored_bytes``) and not stored.
When the writer falls behind by more than ``store_queue_chunks`` chunks, the
executions producing output are throttled through ``Execution.flow`` until the
queue drains: their children block on a full pipe; the event loop does not.

While the database cannot be reached (PostgreSQL down: ``Store.available``
false), output is not queued: each chunk is counted as a *gap* (``gap_chunks``,
``gap_bytes``, ``gaps`` ranges of seq, and among ``unstored_*``) and the
execution is not throttled, so its output keeps flowing live. Chunks of a batch
that failed for the same reason are moved from the stored counts to the gap.
The rows whose writes failed are written whole (an upsert) once the database
is back, before anything else of the recorder's.

On PostgreSQL each committed batch notifies ``cc_output`` with
``"<execution_id>:<seq>"`` (the last seq it stored of that execution) and each
transition notifies ``cc_state`` with ``"<execution_id>:<state>"``: other
nodes follow an execution from the shared store (:meth:`Store.notify`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.process.execution import Execution
from service.process.sinks import Chunk
from service.process.state import ExecutionState
from service.store.database import Store
from service.store.dialect import Conn
from service.store.errors import StoreDown
from service.store.rows import (
    INSERT_CHUNK,
    INSERT_EXECUTION,
    OUTPUT_CHANNEL,
    STATE_CHANNEL,
    UPDATE_COUNTS,
    UPDATE_EXECUTION,
    UPSERT_EXECUTION,
    ChunkRow,
    Tally,
)

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


class Recorder:
    """An ExecutionObserver that keeps executions and transcripts in ``store``.

    ``node_id`` is written into every execution row (``node``): the cluster
    node this server is (None: a server alone)."""

    def __init__(self, store: Store, supervisor: Supervisor, node_id: str | None = None) -> None:
        self.store = store
        self.supervisor = supervisor
        self.node_id = node_id
        self.cap_bytes = store.settings.max_transcript_bytes
        #: This server process, so restart recovery knows what an earlier one left.
        self.server_id = uuid.uuid4().hex
        self.boot_id = read_boot_id()
        #: Executions whose row could not be written (the database was down):
        #: written whole once it is back.
        self._unsynced: dict[str, tuple[Execution, Tally]] = {}
        self.tallies: dict[str, Tally] = {}
        self._rows: list[ChunkRow] = []
        self._rows_bytes = 0
        self._dirty: dict[str, Execution] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._text = store.dialect.text_blob
        self._throttled: dict[str, Execution] = {}
        self.failed_jobs = 0
        store.on_drain(self._release)
        store.on_availability(self._availability)

    # --- the first row, before the spawn (service.store.admission) -------------------

    def insert_job(self, execution: Execution, tally: Tally) -> Callable[[Conn], None]:
        """The write job of ``execution``'s first row, as it is now."""
        row = self._row(execution, tally)
        row.update(self._first_row(execution))
        notice = f"{execution.id}:{execution.state.value}"
        return self._row_job(INSERT_EXECUTION, row, notice)

    def recorded(self, execution: Execution, tally: Tally) -> None:
        """``execution``'s first row is committed: later transitions update it."""
        self.tallies.setdefault(execution.id, tally)

    # --- ExecutionObserver -------------------------------------------------------

    def on_transition(self, execution: Execution) -> None:
        if not self.store.is_open:
            return
        self.flush()
        first = execution.id not in self.tallies
        tally = self.tallies.setdefault(execution.id, Tally())
        if execution.state.is_final:
            self.tallies.pop(execution.id, None)
            self._dirty.pop(execution.id, None)
            throttled = self._throttled.pop(execution.id, None)
            if throttled is not None:
                throttled.flow.set()
        if not self.store.available or execution.id in self._unsynced:
            self._unsynced[execution.id] = (execution, tally)
            return
        row = self._row(execution, tally)
        if first:
            row.update(self._first_row(execution))
        notice = f"{execution.id}:{execution.state.value}"
        on_error = self._failed_row(execution, tally)
        self.store.submit(
            self._row_job(INSERT_EXECUTION if first else UPDATE_EXECUTION, row, notice),
            on_error=on_error,
        )

    def _first_row(self, execution: Execution) -> dict[str, Any]:
        return {
            "connection_id": self._owner_id(execution),
            "server_id": self.server_id,
            "boot_id": self.boot_id,
            "node": self.node_id,
            "command": execution.spec.display or None,
            "argv": json.dumps(execution.spec.argv),
            "cwd": execution.spec.cwd,
            "project_id": execution.spec.project_id,
            "created_at": execution.created_at,
        }

    def _row_job(self, sql: str, row: dict[str, Any], notice: str) -> Callable[[Conn], None]:
        store = self.store

        def job(conn: Conn) -> None:
            conn.execute(sql, row)
            store.notify(conn, STATE_CHANNEL, notice)

        return job

    def _failed_row(self, execution: Execution, tally: Tally) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            if isinstance(exc, StoreDown):
                self._unsynced[execution.id] = (execution, tally)

        return failed

    def _availability(self, available: bool) -> None:
        if available:
            self._resync()

    def _resync(self) -> None:
        """Write whole every row the outage kept from the database, first."""
        if not self._unsynced or not self.store.available or not self.store.is_open:
            return
        pending, self._unsynced = self._unsynced, {}
        for execution, tally in pending.values():
            row = self._row(execution, tally)
            row.update(self._first_row(execution))
            notice = f"{execution.id}:{execution.state.value}"
            self.store.submit(
                self._row_job(UPSERT_EXECUTION, row, notice),
                on_error=self._failed_row(execution, tally),
            )
        logger.info("store back: execution rows written again", extra={"rows": len(pending)})

    def on_output(self, execution: Execution, chunk: Chunk) -> None:
        tally = self.tallies.get(execution.id)
        if tally is None or not self.store.is_open:
            return
        if not self.store.available:
            # Nothing is queued for a database that is not there: counted, and
            # the output keeps flowing live (no throttling).
            tally.add_gap(chunk.seq, chunk.seq, 1, chunk.nbytes)
            self._unsynced[execution.id] = (execution, tally)
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
                    self._text(chunk.data),
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
            # (Only while the database is there: see the module's docstring.)
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
        self._resync()
        if not self._rows and not self._dirty:
            return
        rows, self._rows = self._rows, []
        nbytes, self._rows_bytes = self._rows_bytes, 0
        dirty, self._dirty = self._dirty, {}
        counts = [self._counts(e, self.tallies[e.id]) for e in dirty.values()]
        if not self.store.is_open:
            return
        last: dict[str, int] = {}
        for row in rows:
            last[row[0]] = row[1]
        store = self.store

        def job(conn: Conn) -> None:
            if rows:
                conn.executemany(INSERT_CHUNK, rows)
            if counts:
                conn.executemany(UPDATE_COUNTS, counts)
            for execution_id, seq in last.items():
                store.notify(conn, OUTPUT_CHANNEL, f"{execution_id}:{seq}")

        tallies = {e.id: (e, self.tallies[e.id]) for e in dirty.values()}
        self.store.submit(
            job,
            weight=max(1, len(rows)),
            nbytes=nbytes,
            on_error=lambda exc: self._failed_batch(exc, rows, tallies),
        )

    def _failed_batch(
        self,
        exc: BaseException,
        rows: list[ChunkRow],
        tallies: dict[str, tuple[Execution, Tally]],
    ) -> None:
        """A batch of chunks did not reach the database: a gap, not stored."""
        if not isinstance(exc, StoreDown):
            return
        spans: dict[str, list[int]] = {}
        for row in rows:
            span = spans.setdefault(row[0], [row[1], row[1], 0, 0])
            span[1] = row[1]
            span[2] += 1
            span[3] += row[4]
        for execution_id, (first, last, chunks, nbytes) in spans.items():
            tally = tallies[execution_id][1]
            tally.stored_chunks -= chunks
            tally.stored_bytes -= nbytes
            tally.add_gap(first, last, chunks, nbytes)
        self._unsynced.update(tallies)
        logger.warning(
            "store down: output counted as a gap in the transcript",
            extra={"chunks": len(rows), "executions": len(spans)},
        )

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
            "gap_chunks": tally.gap_chunks,
            "gap_bytes": tally.gap_bytes,
            "gaps": json.dumps(tally.gaps) if tally.gaps else None,
            "updated_at": time.time(),
        }


def _nothing(conn: Conn) -> None:
    return None
