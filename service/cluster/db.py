"""Where the cluster's statements run.

On PostgreSQL the cluster has a connection of its own, used from one thread
of its own: heartbeats, the sweep for expired leases, project locks and the
``pg_notify`` of forwarded requests never queue behind the store writer's
batches of output (a heartbeat stuck behind a backlog would let the lease
expire under a node that is alive). Each :meth:`ClusterDb.run` is one
transaction. A broken connection is reopened at the next call; while the
database cannot be reached the call raises :class:`~service.store.StoreDown`
(the wire's -32007).

Requests and replies between nodes (``pg_notify``) go through a second
connection with a thread of its own, in autocommit and without waiting for the
WAL flush (:meth:`ClusterDb.notify`): one round trip per message.

On SQLite the cluster is one node: its statements go through the store's own
writer (:meth:`Store.write`), the same SQL (written once in SQLite's dialect,
:mod:`service.store.dialect`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from service.store import Store, StoreDown
from service.store.dialect import Conn

if TYPE_CHECKING:
    from service.store.postgres import PgSession

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ClusterDb:
    """Transactions for the cluster's tables (see the module's docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: PgSession | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._notifier: PgSession | None = None
        self._notify_thread: ThreadPoolExecutor | None = None

    @property
    def shared(self) -> bool:
        """Whether the store is PostgreSQL (shared by several nodes)."""
        return self.store.dsn is not None

    async def start(self) -> None:
        """Open the cluster's own connection (PostgreSQL only); StoreDown when
        it cannot."""
        dsn = self.store.dsn
        if dsn is None:
            return
        from service.store.postgres import PgSession

        self._session = PgSession(dsn, self.store.settings.store_timeout_s)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="cluster-db")
        self._notifier = PgSession(dsn, self.store.settings.store_timeout_s)
        self._notify_thread = ThreadPoolExecutor(1, thread_name_prefix="cluster-notify")
        try:
            await self._call(self._session.connect)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._notify_thread, self._open_notifier)
        except Exception as exc:
            raise StoreDown(f"cannot connect: {str(exc).strip()[:200]}") from exc

    def _open_notifier(self) -> None:
        notifier = self._notifier
        assert notifier is not None
        notifier.connect()
        assert notifier.conn is not None
        # One statement per message, no transaction around it; and no wait for
        # the WAL flush, which a notification does not need (a database crash
        # in between loses the message: its asker times out).
        notifier.conn.raw.autocommit = True
        notifier.conn.execute("SET synchronous_commit = off")

    async def notify(self, channel: str, payload: str) -> None:
        """``pg_notify(channel, payload)`` at once, on a connection of its own
        (requests and replies between nodes never wait behind a heartbeat)."""
        if self._notify_thread is None:
            raise StoreDown("the cluster's connection is closed")
        await asyncio.get_running_loop().run_in_executor(
            self._notify_thread, self._notify, channel, payload
        )

    def _notify(self, channel: str, payload: str) -> None:
        notifier = self._notifier
        assert notifier is not None
        # Twice at most: after the database came back, the old connection
        # fails at its first use (nothing was sent on it), and a new one is
        # opened for the same message.
        for attempt in (1, 2):
            if notifier.lost():
                notifier.close()
                try:
                    self._open_notifier()
                except Exception as exc:
                    raise StoreDown(
                        f"the database is unreachable: {str(exc).strip()[:200]}"
                    ) from exc
            assert notifier.conn is not None
            try:
                notifier.conn.execute("SELECT pg_notify(?, ?)", (channel, payload)).fetchone()
                return
            except Exception as exc:
                if not (notifier.is_database_error(exc) and notifier.lost()):
                    raise
                if attempt == 2:
                    raise StoreDown(
                        f"the database is unreachable: {str(exc).strip()[:200]}"
                    ) from exc

    async def close(self) -> None:
        if self._notify_thread is not None and self._notifier is not None:
            notifier, thread = self._notifier, self._notify_thread
            self._notifier = self._notify_thread = None
            await asyncio.get_running_loop().run_in_executor(thread, notifier.close)
            thread.shutdown(wait=True)
        if self._thread is None or self._session is None:
            return
        session, thread = self._session, self._thread
        self._session = self._thread = None
        await asyncio.get_running_loop().run_in_executor(thread, session.close)
        thread.shutdown(wait=True)

    async def run(self, fn: Callable[[Conn], T]) -> T:
        """``fn(conn)`` in one transaction; its result once committed."""
        if self._session is None:
            return await self.store.write(fn)
        return await self._call(lambda: self._transaction(fn))

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise StoreDown("the cluster's connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _transaction(self, fn: Callable[[Conn], T]) -> T:
        session = self._session
        assert session is not None
        if session.lost() and not session.reconnect():
            raise StoreDown("the database is unreachable (cluster connection)")
        conn = session.conn
        assert conn is not None
        try:
            result = fn(conn)
            session.commit()
        except BaseException as exc:
            session.rollback()
            if session.is_database_error(exc) and session.lost():
                raise StoreDown(f"the database is unreachable: {str(exc).strip()[:200]}") from exc
            raise
        return result
