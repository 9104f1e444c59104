"""The PostgreSQL store: a shared database for several nodes (``CC_EXECUTOR_STORE_URL``).

psycopg 3, used synchronously in the store's threads, as SQLite is: the one
writer thread keeps its own connection (batches, ordering and back-off are
:mod:`service.store.writer`'s, unchanged), and the reader threads take
connections from a ``psycopg_pool.ConnectionPool`` (autocommit: each read
statement sees the last committed state, as on SQLite). Jobs and read
functions get a :class:`PgConnection`, which runs the features' SQL through
:func:`~service.store.dialect.to_postgres`. This module is imported only when
the URL is PostgreSQL, so a SQLite server never loads psycopg.

When the database goes away, the first failing statement marks the store
*down* (:class:`~service.store.errors.StoreDown`; -32007 on the wire): reads
and awaited writes fail at once, the writer drops what it is given and tries
to reconnect every ``RECONNECT_S``, and everything resumes when it succeeds.
A request never waits on an unreachable database longer than
``store_timeout_s`` (the connect timeout and the pool's wait).

The data directory is locked for this server as with SQLite
(``cc-executor.postgres.lock``). Migrations run in one transaction per script
under an advisory lock, so two nodes starting at once do not both apply them.
``/health`` shows the tables' size (``pg_total_relation_size``); the cap
counts the data the rows hold (:mod:`service.store.retention` says why).
WAL checkpoints, ``quick_check`` and salvage are SQLite's and have no
counterpart here (PostgreSQL keeps its own files sound).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import psycopg
from psycopg import adapt, sql
from psycopg.types.string import ByteaBinaryLoader, ByteaLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from service.settings import Settings
from service.store.database import Store, suppress_close
from service.store.dialect import POSTGRESQL, Conn, to_postgres
from service.store.errors import StoreDown, StoreError
from service.store.files import DataDirInUse, take_lock
from service.store.migrations import BOOTSTRAP, MigrationError, check_version
from service.store.writer import Session
from service.store_url import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The lock file in ``data_dir`` (``cc-executor.postgres.lock``): one server per directory.
LOCK_NAME = "cc-executor.postgres"
#: The advisory lock key that serialises migrations across nodes ("ccexec").
MIGRATION_LOCK = 0x6363657865630001
#: The catalog query behind the cap: every table of the store's schema, with
#: its indexes and TOAST.
SIZE_SQL = """
SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r'
"""


class TextLoader(ByteaLoader):
    """``bytea`` read back as ``str``: the store keeps text that may hold NUL
    there (see :mod:`service.store.dialect`) and no other binary data.
    psycopg's own loader parses the bytes (hex or escape output)."""

    def load(self, data: adapt.Buffer) -> str:  # type: ignore[override]
        return bytes(super().load(bytes(data))).decode("utf-8", "surrogatepass")


class TextBinaryLoader(ByteaBinaryLoader):
    """The same, for results in binary format."""

    def load(self, data: adapt.Buffer) -> str:  # type: ignore[override]
        return bytes(super().load(bytes(data))).decode("utf-8", "surrogatepass")


def configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("bytea", TextLoader)
    conn.adapters.register_loader("bytea", TextBinaryLoader)


class PgConnection:
    """A psycopg connection with the interface of :class:`~service.store.dialect.Conn`:
    statements in SQLite's dialect, translated once and cached."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = None, /) -> psycopg.Cursor[Any]:
        if parameters is None:
            return self.raw.execute(to_postgres(sql, False))
        return self.raw.execute(to_postgres(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        # Binary parameters: a batch of chunk rows goes 10-20% faster
        # (stress/bench/store_backends.py); psycopg pipelines the statements.
        cursor = self.raw.cursor(binary=True)
        cursor.executemany(to_postgres(sql), parameters)
        return cursor


def connect_options(timeout_s: float) -> dict[str, Any]:
    """libpq options that bound every wait on an unreachable database: the
    connect timeout, and TCP keepalives with a user timeout, so a statement
    on a network that went silent fails instead of hanging the writer."""
    return {
        "connect_timeout": max(1, round(timeout_s)),
        "keepalives": 1,
        "keepalives_idle": max(1, round(timeout_s)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout_s * 1000),
    }


class PgSession:
    """The writer's connection. It is *lost* when psycopg says the connection
    broke; :meth:`reconnect` then opens a new one."""

    def __init__(self, dsn: str, timeout_s: float) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._raw: psycopg.Connection[Any] | None = None
        self.conn: PgConnection | None = None

    def connect(self) -> None:
        raw = psycopg.connect(self.dsn, **connect_options(self.timeout_s))
        configure(raw)
        self._raw, self.conn = raw, PgConnection(raw)

    def begin(self) -> None:
        if self._raw is None:
            raise StoreDown("no connection to the database")
        # psycopg opens the transaction itself at the first statement.

    def commit(self) -> None:
        assert self._raw is not None
        self._raw.commit()

    def rollback(self) -> None:
        if self._raw is not None and not self._raw.closed:
            suppress_close(self._raw.rollback)

    def idle(self) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    def is_database_error(self, exc: BaseException) -> bool:
        return isinstance(exc, (psycopg.Error, StoreDown))

    def lost(self) -> bool:
        raw = self._raw
        return raw is None or raw.closed or raw.broken

    def reconnect(self) -> bool:
        if self._raw is not None and not self.lost():
            try:
                self._raw.execute("SELECT 1")
                self._raw.rollback()
                return True
            except psycopg.Error:
                pass
        self.close()
        try:
            self.connect()
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        if self._raw is not None:
            suppress_close(self._raw.close)
        self._raw = self.conn = None


class PostgresStore(Store):
    """The service's data in a PostgreSQL database (its ``current_schema()``)."""

    dialect = POSTGRESQL

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        super().__init__(settings)
        dsn = url or settings.store_url
        assert dsn is not None, "PostgresStore needs CC_EXECUTOR_STORE_URL"
        self._dsn = dsn
        self.timeout_s = settings.store_timeout_s
        self._session = PgSession(dsn, self.timeout_s)
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._size = 0
        self._lock: TextIO | None = None

    @property
    def dsn(self) -> str:
        return self._dsn

    def _where(self) -> dict[str, Any]:
        return {"url": redact(self._dsn)}

    # --- life --------------------------------------------------------------------

    async def _open_backend(self) -> Session:
        await asyncio.to_thread(self._open_sync)
        return self._session

    def _open_sync(self) -> None:
        # The data directory is still this server's alone: restart recovery
        # would take a second server's executions for its own leftovers.
        data_dir = Path(self.settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._lock = take_lock(data_dir / LOCK_NAME)
        except DataDirInUse as exc:
            raise StoreError(str(exc)) from None
        try:
            self._connect_and_migrate()
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _connect_and_migrate(self) -> None:
        try:
            self._session.connect()
        except psycopg.Error as exc:
            raise StoreDown(f"cannot connect to {redact(self._dsn)}: {exc}") from None
        try:
            conn = self._session.conn
            assert conn is not None
            self._versions = migrate(conn, self._schemas)
            self._size = int(conn.execute(SIZE_SQL).fetchone()[0])  # type: ignore[index]
            self._session.commit()
        except BaseException:
            self._session.close()
            raise
        self._pool = ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=4,
            timeout=self.timeout_s,
            kwargs={
                "autocommit": True,
                **connect_options(self.timeout_s),
                # Readers must not write (as SQLite's query_only).
                "options": "-c default_transaction_read_only=on",
            },
            configure=configure,
            check=ConnectionPool.check_connection,
            reconnect_timeout=24 * 3600,
            name="cc-executor-store",
            open=False,
        )
        self._pool.open(wait=False)

    def _close_backend(self) -> None:
        if self._pool is not None:
            self._pool.close(timeout=5)
            self._pool = None
        self._session.close()
        self._release_lock()

    # --- reading -------------------------------------------------------------------

    def _run_read(self, fn: Callable[[Conn], T]) -> T:
        pool = self._pool
        assert pool is not None
        try:
            with pool.connection() as raw:
                return fn(PgConnection(raw))
        except (PoolTimeout, psycopg.OperationalError) as exc:
            # The database is gone (or unreachable for store_timeout_s): the
            # writer checks its own connection and goes down with it.
            self._writer.suspect()
            raise StoreDown(f"the database is unreachable: {str(exc).strip()[:200]}") from exc
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
            logger.error("store read failed: %s", reason, extra=self.health_where())
            raise StoreError(reason) from exc

    # --- writing -------------------------------------------------------------------

    def notify(self, conn: Conn, channel: str, payload: str) -> None:
        conn.execute("SELECT pg_notify(?, ?)", (channel, payload))

    # --- figures -------------------------------------------------------------------

    def size_bytes(self) -> int:
        """The store's tables as last measured (by :meth:`used_bytes`)."""
        return self._size

    def used_bytes(self, conn: Conn) -> int:
        self._size = int(conn.execute(SIZE_SQL).fetchone()[0])
        return self._size

    async def reclaim(self, tables: list[str]) -> None:
        """``VACUUM`` the trimmed tables (outside any transaction), so the
        deleted rows' space is reused rather than the tables growing."""
        if not tables or not self.available:
            return

        def vacuum() -> None:
            options = connect_options(self.timeout_s)
            with psycopg.connect(self._dsn, autocommit=True, **options) as raw:
                for table in tables:
                    raw.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))

        try:
            await asyncio.to_thread(vacuum)
        except psycopg.Error as exc:
            logger.warning("store vacuum failed: %s", exc)


def migrate(conn: PgConnection, schemas: dict[str, list[Any]]) -> dict[str, int]:
    """Bring every namespace to its latest version; the versions. Each script
    runs in its own transaction with its version bump (a failing one leaves
    its namespace at the previous version); the advisory lock keeps a second
    node from applying the same script at the same time."""
    raw = conn.raw
    versions: dict[str, int] = {}
    raw.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    raw.commit()
    try:
        with raw.transaction():
            raw.execute(BOOTSTRAP)
        rows = raw.execute("SELECT namespace, version FROM schema_versions").fetchall()
        raw.commit()
        current = dict(rows)
        for namespace, scripts in schemas.items():
            version = int(current.get(namespace, 0))
            check_version(namespace, version, scripts)
            for index in range(version, len(scripts)):
                try:
                    with raw.transaction():
                        raw.execute(POSTGRESQL.script(scripts[index]))
                        raw.execute(
                            "INSERT INTO schema_versions(namespace, version) VALUES (%s, %s) "
                            "ON CONFLICT(namespace) DO UPDATE SET version = excluded.version",
                            (namespace, index + 1),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {namespace} {index} -> {index + 1} failed: {exc}"
                    ) from exc
            versions[namespace] = len(scripts)
    finally:
        if not raw.broken:
            raw.rollback()
            raw.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            raw.commit()
    return versions
