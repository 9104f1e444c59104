"""The store every feature builds on, whichever engine is under it.

:class:`Store` is the interface and everything the backends share; the
engines are :class:`service.store.sqlite.SqliteStore` (the embedded default:
one file, WAL, one writer thread) and
:class:`service.store.postgres.PostgresStore` (``CC_EXECUTOR_STORE_URL``), and
:func:`service.store.make_store` picks one from the settings.

A feature registers its own tables as a namespace of versioned migrations
(:meth:`Store.register_schema`) before :meth:`Store.open`; then it reads with
:meth:`Store.read` (a reader connection in a worker thread) and writes with
:meth:`Store.write` or :meth:`Store.submit` (the single writer thread, inside
a transaction; see :mod:`service.store.writer` for batching, ordering and
back-off). Jobs and read functions get a :class:`~service.store.dialect.Conn`
and write their SQL once, in SQLite's dialect (:mod:`service.store.dialect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.settings import Settings
from service.store.dialect import Conn, Dialect, Migration
from service.store.errors import StoreClosed, StoreDamaged, StoreDown, StoreError
from service.store.migrations import validate_namespace
from service.store.writer import Entry, Job, Session, Writer

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The SQLite file's name in ``data_dir`` (kept here: the prompts tool finds it).
DB_NAME = "cc-executor.sqlite3"
#: Reader threads; both engines let them read while the writer writes.
READER_THREADS = 2

__all__ = [
    "DB_NAME",
    "Store",
    "StoreClosed",
    "StoreDamaged",
    "StoreDown",
    "StoreError",
]


class Store:
    """The service's database. Open once, share everywhere, close once.

    Subclasses give the engine: :meth:`_open_backend` (connect, migrate; the
    writer's :class:`~service.store.writer.Session`), :meth:`_run_read`,
    :meth:`_close_backend`, :meth:`size_bytes`, :meth:`used_bytes`,
    :meth:`reclaim`."""

    dialect: Dialect

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Set by retention: the cap cannot be met without deleting what is
        #: live or younger than ``retention_min_age_s``.
        self.over_cap = False
        self.over_cap_used_bytes: int | None = None
        self._schemas: dict[str, list[Migration]] = {}
        self._versions: dict[str, int] = {}
        self._writer = Writer(settings.store_queue_chunks)
        self._readers: ThreadPoolExecutor | None = None
        self._open = False

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.dialect.name

    @property
    def dsn(self) -> str | None:
        """The PostgreSQL connection string (for a ``LISTEN`` connection of
        one's own); None on SQLite."""
        return None

    # --- schema ----------------------------------------------------------------

    def register_schema(self, namespace: str, migrations: Sequence[Migration]) -> None:
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

    @property
    def available(self) -> bool:
        """Whether the database can be reached (always, on SQLite). While not,
        reads and awaited writes fail at once with StoreDown."""
        return not self._writer.down

    async def open(self) -> None:
        """Open the database, apply migrations, and start the writer and
        reader threads. Raises StoreError when it cannot be opened,
        MigrationError when a migration fails."""
        if self._open:
            return
        session = await self._open_backend()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="store-read")
        self._writer.start(session, asyncio.get_running_loop())
        self._open = True
        logger.info(
            "store opened",
            extra={"backend": self.backend, **self._where(), "schema_versions": self._versions},
        )

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
        await asyncio.to_thread(self._close_backend)
        logger.info(
            "store closed",
            extra={"batches": self._writer.batches, "jobs": self._writer.jobs_done},
        )

    async def _open_backend(self) -> Session:
        raise NotImplementedError

    def _close_backend(self) -> None:
        raise NotImplementedError

    def _where(self) -> dict[str, Any]:
        """Where the data is, for the log and ``/health`` (never a password)."""
        return {}

    def health_where(self) -> dict[str, Any]:
        """Where the data is (``path`` or ``url``, never a password)."""
        return {"backend": self.backend, **self._where()}

    # --- reading -------------------------------------------------------------------

    async def read(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` on a reader connection in a worker thread; its result.

        ``fn`` sees the last committed state (a snapshot for the length of one
        statement). It must not write. StoreDown at once while the database is
        known to be unreachable."""
        if not self._open or self._readers is None:
            raise StoreClosed("the store is closed")
        if self._writer.down:
            raise StoreDown("the database is unreachable; the store reconnects by itself")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def _run_read(self, fn: Callable[[Conn], T]) -> T:
        raise NotImplementedError

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

    async def room(self) -> None:
        """Return once the writer's queue is not congested (at once when it is not)."""
        await self._writer.room()

    async def write(
        self, fn: Callable[[Conn], T], committed: Callable[[], None] | None = None
    ) -> T:
        """Run ``fn(conn)`` in the writer thread inside a transaction; its result.

        ``fn`` must not commit. If it raises, its changes are rolled back and
        the exception is raised here. The result is returned once the
        transaction is committed, after every job queued before it. While the
        queue is congested this first waits for room (never blocking the
        loop). StoreDown at once while the database is unreachable.
        ``committed()`` is called in the writer thread right after the commit
        (quick, thread-safe, never raising), before the loop hears of it."""
        if self._writer.down and self._open:
            raise StoreDown("the database is unreachable; the store reconnects by itself")
        await self._writer.room()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(Entry(fn, future, 1, 0, committed=committed))
        return await future

    def submit(
        self,
        fn: Job,
        weight: int = 1,
        nbytes: int = 0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Queue ``fn(conn)`` for the writer without waiting (fire and forget; a
        failure is logged, and given to ``on_error`` on the event loop).
        ``weight`` (chunks) and ``nbytes`` count towards the queue's limits.
        Never blocks; the caller checks :attr:`congested` to back off."""
        self._enqueue(Entry(fn, None, weight, nbytes, on_error))

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop whenever a batch leaves the
        queue no longer congested."""
        self._writer.on_drain(callback)

    def on_availability(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(available)`` on the event loop when the database
        becomes unreachable (False) and when it is back (True)."""
        self._writer.on_availability(callback)

    def notify(self, conn: Conn, channel: str, payload: str) -> None:
        """Inside a write job: tell every ``LISTEN channel`` connection
        ``payload`` once the job's transaction commits (PostgreSQL's
        ``pg_notify``; nothing happens on SQLite, which has no listeners)."""

    def _enqueue(self, entry: Entry) -> None:
        if not self._open:
            raise StoreClosed("the store is closed")
        self._writer.enqueue(entry)

    # --- figures -------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes the store takes (on SQLite the files; on PostgreSQL its
        tables as last measured). Never blocks."""
        raise NotImplementedError

    def used_bytes(self, conn: Conn) -> int:
        """In a read: the bytes of data counted against ``max_store_bytes``."""
        raise NotImplementedError

    async def reclaim(self, tables: list[str]) -> None:
        """After retention deleted rows of ``tables``: make the space reusable."""
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """What ``/health`` shows about the store."""
        info: dict[str, Any] = {
            "open": self._open,
            "backend": self.backend,
            **self._where(),
            "available": self.available,
            "size_bytes": self.size_bytes(),
            "backlog": self._writer.backlog,
            "backlog_bytes": self._writer.backlog_bytes,
            "schema_versions": dict(self._versions),
            "max_store_bytes": self.settings.max_store_bytes,
            "over_cap": self.over_cap,
        }
        if self._writer.jobs_lost:
            info["jobs_lost"] = self._writer.jobs_lost
        if self.over_cap:
            info["used_bytes"] = self.over_cap_used_bytes
        return info


def suppress_close(close: Callable[[], Any]) -> None:
    """Close a connection, whatever state it is in."""
    with contextlib.suppress(Exception):
        close()
