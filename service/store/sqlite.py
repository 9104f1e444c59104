"""The embedded SQLite store: one file, WAL mode, one writer thread.

The default backend (``CC_EXECUTOR_STORE_URL`` unset). At open, the data
directory is locked for this server (``NAME.lock``), and a file that is not an
SQLite database, or that fails ``PRAGMA quick_check``, is moved aside as
``NAME.corrupt-TIMESTAMP``, logged as an error, and replaced by a fresh
database (:mod:`service.store.files`) into which every readable row of the
damaged one is copied (:mod:`service.store.salvage`; ``/health`` shows what
in ``store.salvage``). The WAL, its checkpoints, the lock, ``quick_check``
and salvage are SQLite's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from service.settings import Settings
from service.store.database import DB_NAME, Store, suppress_close
from service.store.dialect import SQLITE, Conn
from service.store.errors import StoreDamaged, StoreError
from service.store.files import DataDirInUse, check_file, move_aside, take_lock
from service.store.migrations import apply_migrations
from service.store.salvage import SalvageReport, salvage_into
from service.store.writer import BUSY_TIMEOUT_MS, TRUNCATE_WAIT_MS, Session

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Pages in the WAL past which SQLite checkpoints by itself (at most 64 MiB of
#: 4 KiB pages, less for a small cap: see :func:`wal_pages_for`); the writer
#: checkpoints sooner when idle. The WAL file is then cut back to that size.
WAL_AUTOCHECKPOINT_PAGES = 16384
WAL_MIN_PAGES = 256
PAGE_BYTES = 4096
#: Free pages given back per write job (about 40 MiB; a few ms of the writer).
VACUUM_PAGES = 10000


#: Each connection's page cache, in KiB (SQLite's default is 2000). Under any
#: steady output the writer's cache fills, and the default one was most of a
#: flooded server's growth (1.5 of 2.4 MB); the writer appends and readers read
#: runs of pages that the kernel's page cache holds anyway, so a quarter of it
#: costs little: about 0.9x of the writer's ceiling in a 200,000-chunk burst
#: (355,000 against 400,000 chunks/s, far above what output needs) and nothing
#: measurable on reads (docs/performance.md, "Warmed server under a flood").
CACHE_KIB = 512


def wal_pages_for(max_store_bytes: int) -> int:
    """The WAL checkpoint threshold for a cap: a quarter of it, between 1 MiB
    and 64 MiB, so that the database and its WAL stay within 2 x cap + 8 MiB."""
    return max(WAL_MIN_PAGES, min(WAL_AUTOCHECKPOINT_PAGES, max_store_bytes // 4 // PAGE_BYTES))


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer says BEGIN itself.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


class SqliteSession:
    """The writer's connection: explicit ``BEGIN IMMEDIATE``, WAL checkpoints
    when idle. A local file never goes away, so it is never *lost*."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def idle(self) -> None:
        """Copy the WAL into the database; once all of it is copied, cut the
        file back to nothing. A passive checkpoint alone leaves the file at its
        high-water mark until the next write, so an idle store would keep a
        WAL many times its cap. The truncation waits for readers briefly, not
        for the connection's full busy timeout."""
        conn = self.conn
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

    def is_database_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def lost(self) -> bool:
        return False

    def reconnect(self) -> bool:
        return True


class SqliteStore(Store):
    """The service's SQLite database."""

    dialect = SQLITE

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        super().__init__(settings)
        self.path = path or Path(settings.data_dir) / DB_NAME
        #: Where a damaged file found at open was moved, and why.
        self.corrupt_moved_to: Path | None = None
        self.corrupt_reason: str | None = None
        #: What was copied out of that file into the fresh database.
        self.salvage: SalvageReport | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock: TextIO | None = None

    def _where(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    # --- life --------------------------------------------------------------------

    async def _open_backend(self) -> Session:
        """Create the data directory and the database, move a damaged file
        aside, apply migrations. StoreError when the directory belongs to
        another server or the database cannot be opened even afresh."""
        await asyncio.to_thread(self._open_sync)
        assert self._write_conn is not None
        return SqliteSession(self._write_conn)

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

    def _close_backend(self) -> None:
        for conn in [*self._reader_conns, self._write_conn]:
            if conn is not None:
                suppress_close(conn.close)
        self._reader_conns.clear()
        self._write_conn = None
        self._release_lock()

    # --- reading -------------------------------------------------------------------

    def _run_read(self, fn: Callable[[Conn], T]) -> T:
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

    # --- figures -------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes on disk: the database and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def used_bytes(self, conn: Conn) -> int:
        """Bytes of the database's pages that hold data (not the free list)."""
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    async def reclaim(self, tables: list[str]) -> None:
        """Give the free pages back to the file system, a batch per write job."""
        while await self.write(_vacuum) == VACUUM_PAGES:
            pass

    def health(self) -> dict[str, Any]:
        info = super().health()
        if self.corrupt_moved_to is not None:
            info["corrupt_moved_to"] = str(self.corrupt_moved_to)
            info["corrupt_reason"] = self.corrupt_reason
        if self.salvage is not None:
            info["salvage"] = self.salvage.as_dict()
        return info


def _vacuum(conn: Conn) -> int:
    """Give up to ``VACUUM_PAGES`` free pages back to the file system; how many.

    ``PRAGMA incremental_vacuum`` frees one page per step and reports each as
    a row without columns, which Python's sqlite3 does not step through: one
    execute frees one page, whatever N says. Hence one execute per page."""
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    pages = min(free, VACUUM_PAGES)
    for _ in range(pages):
        conn.execute("PRAGMA incremental_vacuum(1)")
    return pages
