"""The store's typed errors. The wire answers every one of them -32007
``STORE_ERROR`` (the one boundary: :mod:`service.dispatch`)."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked (closed, failed to open)."""


class StoreClosed(StoreError):
    """The store is closed; nothing can be read or written."""


class StoreDamaged(StoreError):
    """A read failed inside SQLite: a damaged page, an I/O error."""


class StoreDown(StoreError):
    """The database cannot be reached (PostgreSQL stopped, the network gone).
    Raised at once while the store knows it is down, or after at most
    ``store_timeout_s``; the store reconnects by itself."""
