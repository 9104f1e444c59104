"""The embedded SQLite store: one file, WAL mode, one writer thread.

:class:`Store` is the storage every feature builds on. A feature registers its
own tables as a namespace of versioned migrations (:meth:`Store.register_schema`)
before :meth:`Store.open`; then it reads with :meth:`Store.read` (a reader
connection in a worker thread) and writes with :meth:`Store.write` or
:meth:`Store.submit` (the single writer thread, inside a transaction; see
:mod:`service.store.writer` for batching, ordering and back-off).

At open, the data directory is locked for this server (``NAME.lock``), and a
file that is not an SQLite database, or that fails ``PRAGMA quick_check``, is
moved aside as ``NAME.corrupt-TIMESTAMP``, logged as an error, and replaced by
a fresh database (:mod:`service.store.files`) into which every readable row
of the damaged one is copied (:mod:`service.store.salvage`; ``/health`` shows
what in ``store.salvage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO, TypeVar

from service.settings import Settings
from service.store.files import DataDirInUse, check_file, move_aside, take_lock
from service.store.migrations import apply_migrations, validate_namespace
from service.store.salvage import SalvageReport, salvage_into
from service.store.writer import BUSY_TIMEOUT_MS, Entry, Job, Writer

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME = "cc-executor.sqlite3"
#: Reader threads; SQLite in WAL mode lets them read while the writer writes.
READER_THREADS = 2
#: Pages in the WAL past which SQLite checkpoints by itself (at most 64 MiB of
#: 4 KiB pages, less for a small cap: see :func:`wal_pages_for`); the writer
#: checkpoints sooner when idle. The WAL file is then cut back to that size.
WAL_AUTOCHECKPOINT_PAGES = 16384
WAL_MIN_PAGES = 256
PAGE_BYTES = 4096


def wal_pages_for(max_store_bytes: int) -> int:
    """The WAL checkpoint threshold for a cap: a quarter of it, between 1 MiB
    and 64 MiB, so that the database and its WAL stay within 2 x cap + 8 MiB."""
    return max(WAL_MIN_PAGES, min(WAL_AUTOCHECKPOINT_PAGES, max_store_bytes // 4 // PAGE_BYTES))


class StoreError(Exception):
    """The store cannot do what was asked (closed, failed to open)."""


class StoreClosed(StoreError):
    """The store is closed; nothing can be read or written."""


class StoreDamaged(StoreError):
    """A read failed inside SQLite: a damaged page, an I/O error. The wire
    answers -32007 ``STORE_ERROR`` (:mod:`service.server.dispatch`)."""


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer says BEGIN itself.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Store:
    """The service's SQLite database. Open once, share everywhere, close once."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        self.path = path or Path(settings.data_dir) / DB_NAME
        #: Where a damaged file found at open was moved, and why.
        self.corrupt_moved_to: Path | None = None
        self.corrupt_reason: str | None = None
        #: What was copied out of that file into the fresh database.
        self.salvage: SalvageReport | None = None
        #: Set by retention: the cap cannot be met without deleting what is
        #: live or younger than ``retention_min_age_s``.
        self.over_cap = False
        self.over_cap_used_bytes: int | None = None
        self._schemas: dict[str, list[str]] = {}
        self._versions: dict[str, int] = {}
        self._writer = Writer(settings.store_queue_chunks)
        self._write_conn: sqlite3.Connection | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock: TextIO | None = None
        self._open = False

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
        Raises StoreError when the directory belongs to another server or the
        database cannot be opened even afresh, MigrationError when a migration
        fails."""
        if self._open:
            return
        await asyncio.to_thread(self._open_sync)
        assert self._write_conn is not None
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="store-read")
        self._writer.start(self._write_conn, asyncio.get_running_loop())
        self._open = True
        logger.info(
            "store opened",
            extra={"path": str(self.path), "schema_versions": dict(self._versions)},
        )

    def _open_sync(self) -> None:
        # Transcripts may hold secrets: the directory and the files are the user's only.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._lock = take_lock(self.path)
        except DataDirInUse as exc:
            raise StoreError(str(exc)) from None
        try:
            self._open_file()
        except BaseException:
            self._release_lock()
            raise

    def _open_file(self) -> None:
        problem = check_file(self.path)
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
        if self.corrupt_moved_to is not None:
            self._salvage(self.corrupt_moved_to, self._write_conn)

    def _salvage(self, damaged: Path, conn: sqlite3.Connection) -> None:
        report = salvage_into(damaged, conn)
        self.salvage = report
        summary = report.as_dict()
        log = logger.warning if report.error is None else logger.error
        log(
            "store salvage: %d rows copied from the damaged file (%d reads failed)",
            summary["salvaged_rows"],
            summary["failed_reads"],
            extra={"salvage": summary},
        )

    def _move_aside(self, reason: str) -> None:
        self.corrupt_moved_to = move_aside(self.path, reason)
        self.corrupt_reason = reason

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

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
            wal_pages = wal_pages_for(self.settings.max_store_bytes)
            conn.execute(f"PRAGMA wal_autocheckpoint = {wal_pages}")
            conn.execute(f"PRAGMA journal_size_limit = {wal_pages * PAGE_BYTES}")
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
        await self._writer.stop()
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
        logger.info(
            "store closed",
            extra={"batches": self._writer.batches, "jobs": self._writer.jobs_done},
        )

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
        try:
            return fn(conn)
        except sqlite3.DatabaseError as exc:
            # quick_check at open does not read every record: a damaged page
            # shows up here, on the first read that touches it.
            # The message of a decoding failure quotes the damaged bytes: not for the wire.
            reason = str(exc).split(" with text ", 1)[0][:200]
            logger.error("store read failed: %s", reason, extra={"path": str(self.path)})
            raise StoreDamaged(reason) from exc

    # --- writing -------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """The weight of the jobs waiting for the writer (chunks, mostly)."""
        return self._writer.backlog

    @property
    def congested(self) -> bool:
        """Whether the writer's queue is past ``store_queue_chunks`` chunks or
        :data:`~service.store.writer.MAX_BACKLOG_BYTES`: producers back off."""
        return self._writer.congested

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread inside a transaction; its result.

        ``fn`` must not commit. If it raises, its changes are rolled back and
        the exception is raised here. The result is returned once the
        transaction is committed, after every job queued before it. While the
        queue is congested this first waits for room (never blocking the loop)."""
        await self._writer.room()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(Entry(fn, future, 1, 0))
        return await future

    def submit(self, fn: Job, weight: int = 1, nbytes: int = 0) -> None:
        """Queue ``fn(conn)`` for the writer without waiting (fire and forget; a
        failure is logged). ``weight`` (chunks) and ``nbytes`` count towards the
        queue's limits. Never blocks; the caller checks :attr:`congested` to back off."""
        self._enqueue(Entry(fn, None, weight, nbytes))

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop whenever a batch leaves the
        queue no longer congested."""
        self._writer.on_drain(callback)

    def _enqueue(self, entry: Entry) -> None:
        if not self._open:
            raise StoreClosed("the store is closed")
        self._writer.enqueue(entry)

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
            "backlog": self._writer.backlog,
            "backlog_bytes": self._writer.backlog_bytes,
            "schema_versions": dict(self._versions),
            "max_store_bytes": self.settings.max_store_bytes,
            "over_cap": self.over_cap,
        }
        if self.over_cap:
            info["used_bytes"] = self.over_cap_used_bytes
        if self.corrupt_moved_to is not None:
            info["corrupt_moved_to"] = str(self.corrupt_moved_to)
            info["corrupt_reason"] = self.corrupt_reason
        if self.salvage is not None:
            info["salvage"] = self.salvage.as_dict()
        return info
