"""Durable storage: the database and what lives in it.

:class:`Store` (``database.py``) is the generic part every feature uses, with
two engines: SQLite (``sqlite.py``, the embedded default) and PostgreSQL
(``postgres.py``, ``CC_EXECUTOR_STORE_URL``); :func:`make_store` picks one.
The executor's own tables (executions, transcript chunks), the recorder that
fills them, attach/replay, retention and restart recovery live beside it.
"""

from __future__ import annotations

from service.settings import Settings
from service.store.database import Store, StoreClosed, StoreDown, StoreError
from service.store.migrations import MigrationError

__all__ = ["MigrationError", "Store", "StoreClosed", "StoreDown", "StoreError", "make_store"]


def make_store(settings: Settings) -> Store:
    """The store ``settings`` ask for: PostgreSQL when ``store_url`` is set
    (psycopg is imported only then), else SQLite in ``data_dir``."""
    if settings.store_url is not None:
        from service.store.postgres import PostgresStore

        return PostgresStore(settings)
    from service.store.sqlite import SqliteStore

    return SqliteStore(settings)
