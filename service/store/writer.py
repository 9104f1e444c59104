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

The writer does not know the engine: it runs on a :class:`Session` (SQLite's
or PostgreSQL's). When the session loses its connection (a PostgreSQL server
gone), the batch's jobs fail with :class:`~service.store.errors.StoreDown`,
the writer is *down*: every job queued while down fails at once without
touching the database (the queue drains, nothing is held until memory runs
out), and the writer tries to reconnect every ``RECONNECT_S``. The callbacks
of :meth:`Writer.on_availability` hear both changes, on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from service.store.errors import StoreDown

logger = logging.getLogger(__name__)

Job = Callable[[Any], Any]

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
#: Seconds between two attempts to reconnect while the database is down.
RECONNECT_S = 0.5


class Session(Protocol):
    """The writer's connection to one engine."""

    #: What the jobs are given (their ``conn``).
    conn: Any

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None:
        """Roll the open transaction back; never raises."""

    def idle(self) -> None:
        """The queue has been empty for ``CHECKPOINT_IDLE_S`` after writes."""

    def is_database_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the engine's (not a job's own failure)."""

    def lost(self) -> bool:
        """Whether the connection is gone (a database error may have ended it)."""

    def reconnect(self) -> bool:
        """Try once to connect again; whether it worked. Never raises."""


@dataclass(slots=True)
class Entry:
    """One queued job, and who waits for it (None: fire and forget)."""

    job: Job
    future: asyncio.Future[Any] | None
    weight: int
    nbytes: int
    #: Called on the event loop with the exception when a fire-and-forget job fails.
    on_error: Callable[[BaseException], None] | None = None
    #: Called in the writer thread once the job's transaction committed, before
    #: its future resolves on the loop: quick, thread-safe, and never raising.
    committed: Callable[[], None] | None = None


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
        self._availability_callbacks: list[Callable[[bool], None]] = []
        self._stopping = False
        #: The database cannot be reached; set by the thread (or :meth:`suspect`).
        self.down = False
        self._suspect = False
        self._next_attempt = 0.0
        #: Fire-and-forget jobs that failed because the database was down.
        self.jobs_lost = 0

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

    def on_availability(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(available)`` on the event loop when the writer goes
        down (False) and when it has reconnected (True)."""
        self._availability_callbacks.append(callback)

    def suspect(self) -> None:
        """A reader lost its connection: the writer checks its own at once
        (and goes down if the database is gone)."""
        with self._cond:
            self._suspect = True
            self._cond.notify()

    # --- life ----------------------------------------------------------------------

    def start(self, session: Session, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(session,), name="store-writer", daemon=True
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

    def _run(self, session: Session) -> None:
        wal_dirty = False
        while True:
            idle = False
            batch: list[Entry] = []
            with self._cond:
                while not self._queue and not self._stopping and not self._suspect:
                    if self.down:
                        if not self._cond.wait(RECONNECT_S):
                            break
                    elif not wal_dirty:
                        self._cond.wait()
                    elif not self._cond.wait(CHECKPOINT_IDLE_S):
                        idle = True
                        break
                suspect, self._suspect = self._suspect, False
                if not idle:
                    if not self._queue and self._stopping:
                        return
                    while self._queue and len(batch) < MAX_BATCH_JOBS:
                        batch.append(self._queue.popleft())
            if self.down or suspect:
                self._check(session, probe=suspect)
            if idle and not self.down:
                session.idle()
                wal_dirty = False
                continue
            if not batch:
                continue
            if self.down:
                down = StoreDown("the database is unreachable; the store reconnects by itself")
                outcomes: list[tuple[bool, Any]] = [(False, down)] * len(batch)
            else:
                outcomes = self._run_batch(session, batch)
                if session.lost():
                    self._set_down(True)
                    outcomes = [(ok, value if ok else _as_down(value)) for ok, value in outcomes]
                wal_dirty = True
                for entry, (ok, _) in zip(batch, outcomes, strict=True):
                    if ok and entry.committed is not None:
                        entry.committed()
            with self._cond:
                self._backlog -= sum(entry.weight for entry in batch)
                self._backlog_bytes -= sum(entry.nbytes for entry in batch)
                relieved = not self.congested
            self.batches += 1
            self.jobs_done += len(batch)
            self._report(batch, outcomes, relieved)

    def _check(self, session: Session, *, probe: bool) -> None:
        """While down: try to reconnect. On a reader's suspicion: see whether
        the connection still works, and go down if it does not."""
        if not self.down and probe:
            if not session.reconnect():
                self._set_down(True)
                self._next_attempt = time.monotonic() + RECONNECT_S
            return
        if self.down and time.monotonic() >= self._next_attempt:
            if session.reconnect():
                self._set_down(False)
            else:
                self._next_attempt = time.monotonic() + RECONNECT_S

    def _set_down(self, down: bool) -> None:
        if down == self.down:
            return
        self.down = down
        if down:
            logger.error("store database unreachable; writes fail until it is back")
        else:
            logger.warning("store database reachable again; writes resume")
        loop = self._loop
        assert loop is not None

        def tell() -> None:
            for callback in list(self._availability_callbacks):
                callback(not down)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(tell)

    @staticmethod
    def _run_batch(session: Session, batch: list[Entry]) -> list[tuple[bool, Any]]:
        # Every statement hands the GIL back and forth with the event loop, so a
        # batch of one job (the usual case) runs without a savepoint.
        conn = session.conn
        single = len(batch) == 1
        outcomes: list[tuple[bool, Any]] = []
        try:
            session.begin()
            for entry in batch:
                if not single:
                    conn.execute("SAVEPOINT job")
                try:
                    result = entry.job(conn)
                except Exception as exc:  # the job's own failure; report it to its owner
                    if session.lost():
                        raise
                    if single:
                        session.rollback()
                        return [(False, exc)]
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    if not single:
                        conn.execute("RELEASE job")
                    outcomes.append((True, result))
            session.commit()
        except Exception as exc:
            if not session.is_database_error(exc) and not session.lost():
                raise
            # The transaction itself failed (disk full, I/O error, connection
            # gone): every job fails.
            logger.error("store batch failed", exc_info=exc, extra={"jobs": len(batch)})
            session.rollback()
            outcomes = [(False, exc)] * len(batch)
        return outcomes

    def _report(self, batch: list[Entry], outcomes: list[tuple[bool, Any]], relieved: bool) -> None:
        loop = self._loop
        assert loop is not None

        def deliver() -> None:
            for entry, (ok, value) in zip(batch, outcomes, strict=True):
                if entry.future is None:
                    if ok:
                        continue
                    if entry.on_error is not None:
                        entry.on_error(value)
                    if isinstance(value, StoreDown):
                        self.jobs_lost += 1  # said once, when the writer went down
                    else:
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


def _as_down(exc: BaseException) -> BaseException:
    """A job's failure once the connection is known gone: StoreDown, so the
    wire says -32007 and the callers know it is the database, not them."""
    if isinstance(exc, StoreDown):
        return exc
    down = StoreDown(f"the database connection was lost: {str(exc).strip()[:200]}")
    down.__cause__ = exc
    return down
