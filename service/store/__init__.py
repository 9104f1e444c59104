"""Durable storage: the embedded SQLite database and what lives in it.

:class:`Store` (``database.py``) is the generic part every feature uses;
the executor's own tables (executions, transcript chunks), the recorder that
fills them, attach/replay, retention and restart recovery live beside it.
"""

from service.store.database import Store, StoreClosed, StoreError
from service.store.migrations import MigrationError

__all__ = ["MigrationError", "Store", "StoreClosed", "StoreError"]
