"""The embedded SQLite store: one file, WAL mode, one writer thread.

:class:`Store` is the storage every feature builds on. A feature registers its
own tables as a namespace of versioned migrations (:meth:`Store.register_schema`)
before :meth:`Store.open`; then it reads with :meth:`Store.read` (a reader
connection in a worker thread) and writes with :meth:`Store.write` (the single
writer thread, inside a transaction).

Writes never run on the event loop. They are *jobs* on a bounded FIFO queue
that the writer thread drains in batches: every job of a batch runs in its own
savepoint inside one transaction, so a batch costs one commit (one fsync at
most) however many jobs it holds, and a job that raises rolls back alone. A
stalled disk therefore stalls the writer thread only; the event loop keeps
serving, and producers see the queue fill up (:attr:`Store.backlog`) and back
off. Jobs run in the order they were submitted, and a job's future resolves
only after its batch is committed, so ``await store.write(...)`` doubles as a
barrier for everything submitted before it.

A file that is not an SQLite database, or that fails ``PRAGMA quick_check``,
is moved aside as ``NAME.corrupt-TIMESTAMP`` (with its ``-wal`` and ``-shm``
files), logged as an error, and replaced by a fresh database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from service.settings import Settings
from service.store.migrations import apply_migrations, validate_namespace

logger = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

DB_NAME = "cc-executor.sqlite3"
SQLITE_HEADER = b"SQLite format 3\x00"
#: Reader threads; SQLite in WAL mode lets them read while the writer writes.
READER_THREADS = 2
#: Jobs run in one transaction at most; bounds the time a commit waits.
MAX_BATCH_JOBS = 512
#: Bytes of data queued for the writer past which it is congested too, however
#: few chunks they are (a chunk may be a 256 KiB read).
MAX_BACKLOG_BYTES = 64 * 1024 * 1024
#: Pages in the WAL past which SQLite checkpoints by itself (64 MiB of 4 KiB pages).
WAL_AUTOCHECKPOINT_PAGES = 16384
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
#: Seconds without a write job after which the writer checkpoints the WAL.
CHECKPOINT_IDLE_S = 1.0


class StoreError(Exception):
    """The store cannot do what was asked (closed, failed to open)."""


class StoreClosed(StoreError):
    """The store is closed; nothing can be read or written."""


@dataclass(slots=True)
class _Entry:
    job: Job
    future: asyncio.Future[Any] | None
    weight: int
    nbytes: int


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer says BEGIN itself.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Store:
    """The service's SQLite database. Open once, share everywhere, close once."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        self.path = path or Path(settings.data_dir) / DB_NAME
        #: Where a damaged file found at open was moved, if it was.
        self.corrupt_moved_to: Path | None = None
        self.corrupt_reason: str | None = None
        self._schemas: dict[str, list[str]] = {}
        self._versions: dict[str, int] = {}
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._backlog = 0
        self._backlog_bytes = 0
        self._queue_limit = settings.store_queue_chunks
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._drain_callbacks: list[Callable[[], None]] = []
        self._open = False
        self._stopping = False
        self._lock: TextIO | None = None
        self.batches = 0
        self.jobs_done = 0

    # --- schema ----------------------------------------------------------------

    def register_schema(self, namespace: str, migrations: list[str]) -> None:
        """Declare ``namespace``'s tables as SQL scripts applied in order.

        Script *i* (0-based) brings the namespace to version *i + 1*; the
        applied version is kept in ``schema_versions``, so only new scripts run
        at the next start. Scripts must never be edited once released: append
        a new one. Must be called before :meth:`open`.
        """
        validate_namespace(namespace)
        if self._open:
            raise StoreError(f"register_schema({namespace!r}) after open()")
        if namespace in self._schemas:
            raise StoreError(f"schema namespace {namespace!r} registered twice")
        self._schemas[namespace] = list(migrations)

    def schema_version(self, namespace: str) -> int:
        """The version ``namespace`` is at (0 when it has no tables yet)."""
        return self._versions.get(namespace, 0)

    # --- life --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        """Create the data directory and the database, move a damaged file
        aside, apply migrations, and start the writer and reader threads.
        Raises StoreError when the database cannot be opened even afresh."""
        if self._open:
            return
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_sync)
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="store-read")
        self._stopping = False
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()
        self._open = True
        logger.info(
            "store opened",
            extra={"path": str(self.path), "schema_versions": dict(self._versions)},
        )

    def _open_sync(self) -> None:
        # Transcripts may hold secrets: the directory and the files are the user's only.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        try:
            self._open_file()
        except BaseException:
            self._release_lock()
            raise

    def _open_file(self) -> None:
        problem = self._check_file()
        if problem is not None:
            self._move_aside(problem)
        # SQLite gives the -wal and -shm files the mode of the database file.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._write_conn = self._prepare()
        except sqlite3.DatabaseError as exc:
            if problem is not None:
                raise StoreError(f"cannot open a fresh store at {self.path}: {exc}") from exc
            self._move_aside(f"cannot open: {exc}")
            self._write_conn = self._prepare()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock(self) -> None:
        """Hold ``NAME.lock`` for the life of the store: a second server on the
        same data directory would take the first one's executions for leftovers
        of a crash and kill them. The kernel drops the lock when the process
        dies, however it dies; children never inherit it (close-on-exec)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+", encoding="ascii")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(
                f"the data directory {self.path.parent} is in use by another cc-executor "
                f"(pid {holder}); give each server its own CC_EXECUTOR_DATA_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def _check_file(self) -> str | None:
        """Why the existing file is unusable, or None (absent files are fine)."""
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            return None
        if not header:
            return None  # an empty file is a valid, empty database
        if header != SQLITE_HEADER:
            return "not an SQLite database (bad header)"
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                rows = conn.execute("PRAGMA quick_check").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return f"damaged: {exc}"
        if rows != [("ok",)]:
            return "damaged: " + "; ".join(str(row[0]) for row in rows[:5])
        return None

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        self.path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        self.corrupt_moved_to = target
        self.corrupt_reason = reason
        logger.error(
            "store file is damaged; moved aside and starting a fresh one",
            extra={"path": str(self.path), "moved_to": str(target), "reason": reason},
        )

    def _prepare(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        try:
            # auto_vacuum only takes effect on a database without tables.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("store is not in WAL mode", extra={"journal_mode": mode})
            # WAL makes NORMAL durable against application crashes; only a power
            # loss may cost the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints (copying the WAL into the database, with an fsync) are
            # the main cost of a flood: the writer runs them when idle, and
            # SQLite only when the WAL passes 64 MiB; the WAL file is then cut back.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            self._versions = apply_migrations(conn, self._schemas)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Finish every queued job, stop the threads, close the connections.
        Safe to call twice."""
        if not self._open:
            return
        self._open = False
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        writer = self._writer
        if writer is not None:
            await asyncio.to_thread(writer.join)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        for conn in [*self._reader_conns, self._write_conn]:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self._reader_conns.clear()
        self._write_conn = None
        self._release_lock()
        self._room.set()
        logger.info("store closed", extra={"batches": self.batches, "jobs": self.jobs_done})

    # --- reading -------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection in a worker thread; its result.

        ``fn`` sees the last committed state (a snapshot for the length of one
        statement, or of an explicit ``BEGIN`` it opens itself). It must not write.
        """
        if not self._open or self._readers is None:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            self._reader_conns.append(conn)
        return fn(conn)

    # --- writing -------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """The weight of the jobs waiting for the writer (chunks, mostly)."""
        return self._backlog

    @property
    def congested(self) -> bool:
        """Whether the queue is past ``store_queue_chunks`` or ``MAX_BACKLOG_BYTES``:
        producers back off."""
        return self._backlog >= self._queue_limit or self._backlog_bytes >= MAX_BACKLOG_BYTES

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread inside a transaction; its result.

        ``fn`` runs in its own savepoint: if it raises, its changes are rolled
        back and the exception is raised here. The result is returned once the
        transaction is committed. While the queue is congested this waits for
        room first (it never blocks the event loop)."""
        while self.congested and self._open:
            self._room.clear()
            await self._room.wait()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Entry(fn, future, 1, 0))
        return await future

    def submit(self, fn: Job, weight: int = 1, nbytes: int = 0) -> None:
        """Queue ``fn(conn)`` for the writer without waiting for it (fire and forget;
        a failure is logged). ``weight`` counts towards :attr:`backlog` (a batch of
        chunks weighs its number of chunks). Never blocks; the caller checks
        :attr:`congested` to back off."""
        self._enqueue(_Entry(fn, None, weight, nbytes))

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop each time the writer finishes a
        batch and the queue is no longer congested."""
        self._drain_callbacks.append(callback)

    def _enqueue(self, entry: _Entry) -> None:
        if not self._open:
            raise StoreClosed("the store is closed")
        with self._cond:
            self._queue.append(entry)
            self._backlog += entry.weight
            self._backlog_bytes += entry.nbytes
            self._cond.notify()

    def _write_loop(self) -> None:
        conn = self._write_conn
        assert conn is not None
        wal_dirty = False
        while True:
            idle = False
            batch: list[_Entry] = []
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

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            logger.warning("store checkpoint failed", extra={"error": str(exc)})

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Entry]) -> list[tuple[bool, Any]]:
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

    def _report(
        self, batch: list[_Entry], outcomes: list[tuple[bool, Any]], relieved: bool
    ) -> None:
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

    # --- figures -------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes on disk: the database and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def health(self) -> dict[str, Any]:
        """What ``/health`` shows about the store."""
        info: dict[str, Any] = {
            "open": self._open,
            "path": str(self.path),
            "size_bytes": self.size_bytes(),
            "backlog": self._backlog,
            "backlog_bytes": self._backlog_bytes,
            "schema_versions": dict(self._versions),
        }
        if self.corrupt_moved_to is not None:
            info["corrupt_moved_to"] = str(self.corrupt_moved_to)
            info["corrupt_reason"] = self.corrupt_reason
        return info
