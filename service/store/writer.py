"""The store's single writer thread and the bounded queue that feeds it.

Writes never run on the event loop. They are *jobs* (``fn(conn)``) on a FIFO
queue that the writer thread drains in batches: the jobs of a batch run in one
transaction, each in its own savepoint when there are several, so a batch
costs one commit however many jobs it holds and a job that raises rolls back
alone. Jobs run in the order they were queued, and a job's future resolves
only after its batch is committed, so awaiting one is a barrier for everything
queued before it.

The queue is bounded by weight (chunks) and bytes: past either limit it is
*congested*; :meth:`Writer.room` lets async writers wait, and fire-and-forget
producers check :attr:`Writer.congested` and back off. A stalled disk thus
stalls the writer thread only. When idle for ``CHECKPOINT_IDLE_S`` after
writing, the writer checkpoints the WAL, so the copy into the database file
happens between floods rather than during one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Job = Callable[[sqlite3.Connection], Any]

#: Jobs run in one transaction at most; bounds the time a commit waits.
MAX_BATCH_JOBS = 512
#: Bytes of data queued past which the writer is congested too, however few
#: chunks they are (a chunk may be a 256 KiB read). Small enough that a flood the
#: disk cannot keep up with costs the server little memory (the 100 MB budget).
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
#: Seconds without a job after which the writer checkpoints the WAL.
CHECKPOINT_IDLE_S = 1.0
#: Milliseconds the idle checkpoint waits for readers before it leaves the WAL
#: file at its size for the next idle pass (the database's own busy timeout,
#: ``BUSY_TIMEOUT_MS``, is for writes that must happen).
TRUNCATE_WAIT_MS = 200
#: Milliseconds every store connection waits on a lock before it fails.
BUSY_TIMEOUT_MS = 30_000


@dataclass(slots=True)
class Entry:
    """One queued job, and who waits for it (None: fire and forget)."""

    job: Job
    future: asyncio.Future[Any] | None
    weight: int
    nbytes: int


class Writer:
    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.batches = 0
        self.jobs_done = 0
        self._queue: deque[Entry] = deque()
        self._cond = threading.Condition()
        self._backlog = 0
        self._backlog_bytes = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._drain_callbacks: list[Callable[[], None]] = []
        self._stopping = False

    # --- state -------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return self._backlog

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    @property
    def congested(self) -> bool:
        return self._backlog >= self.queue_limit or self._backlog_bytes >= MAX_BACKLOG_BYTES

    async def room(self) -> None:
        """Return once the queue is not congested (at once when it is not)."""
        while self.congested and not self._stopping:
            self._room.clear()
            await self._room.wait()

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop whenever a batch leaves the
        queue no longer congested."""
        self._drain_callbacks.append(callback)

    # --- life ----------------------------------------------------------------------

    def start(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="store-writer", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Run every queued job, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._room.set()

    def enqueue(self, entry: Entry) -> None:
        with self._cond:
            self._queue.append(entry)
            self._backlog += entry.weight
            self._backlog_bytes += entry.nbytes
            self._cond.notify()

    # --- the thread ------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection) -> None:
        wal_dirty = False
        while True:
            idle = False
            batch: list[Entry] = []
            with self._cond:
                while not self._queue and not self._stopping:
                    if not wal_dirty:
                        self._cond.wait()
                    elif not self._cond.wait(CHECKPOINT_IDLE_S):
                        idle = True
                        break
                if not idle:
                    if not self._queue and self._stopping:
                        return
                    while self._queue and len(batch) < MAX_BATCH_JOBS:
                        batch.append(self._queue.popleft())
            if idle:
                self._checkpoint(conn)
                wal_dirty = False
                continue
            outcomes = self._run_batch(conn, batch)
            wal_dirty = True
            with self._cond:
                self._backlog -= sum(entry.weight for entry in batch)
                self._backlog_bytes -= sum(entry.nbytes for entry in batch)
                relieved = not self.congested
            self.batches += 1
            self.jobs_done += len(batch)
            self._report(batch, outcomes, relieved)

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database; once all of it is copied, cut the
        file back to nothing. A passive checkpoint alone leaves the file at its
        high-water mark until the next write, so an idle store would keep a
        WAL many times its cap. The truncation waits for readers briefly, not
        for the connection's full busy timeout."""
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy == 0 and frames > 0 and frames == copied:
                conn.execute(f"PRAGMA busy_timeout = {TRUNCATE_WAIT_MS}")
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            logger.warning("store checkpoint failed", extra={"error": str(exc)})

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, batch: list[Entry]) -> list[tuple[bool, Any]]:
        # Every statement hands the GIL back and forth with the event loop, so a
        # batch of one job (the usual case) runs without a savepoint.
        single = len(batch) == 1
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for entry in batch:
                if not single:
                    conn.execute("SAVEPOINT job")
                try:
                    result = entry.job(conn)
                except Exception as exc:  # the job's own failure; report it to its owner
                    if single:
                        conn.execute("ROLLBACK")
                        return [(False, exc)]
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    if not single:
                        conn.execute("RELEASE job")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # The transaction itself failed (disk full, I/O error): every job fails.
            logger.error("store batch failed", exc_info=exc, extra={"jobs": len(batch)})
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        return outcomes

    def _report(self, batch: list[Entry], outcomes: list[tuple[bool, Any]], relieved: bool) -> None:
        loop = self._loop
        assert loop is not None

        def deliver() -> None:
            for entry, (ok, value) in zip(batch, outcomes, strict=True):
                if entry.future is None:
                    if not ok:
                        logger.error("store job failed", exc_info=value)
                    continue
                if entry.future.done():
                    continue
                if ok:
                    entry.future.set_result(value)
                else:
                    entry.future.set_exception(value)
            if relieved:
                self._room.set()
                for callback in list(self._drain_callbacks):
                    callback()

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(deliver)
