"""Wiring the store into the service: what happens at build, start and stop.

``install`` (from ``Services.build``) registers the core schema. ``start``
(from ``Services.startup``, before the server listens) opens the database.
``stop`` (from ``Services.shutdown``, after every execution has ended) closes
it, so the last transitions reach the disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE

if TYPE_CHECKING:
    from service.services import Services


def install(services: Services) -> None:
    store = services.store
    if store is None:
        return
    store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)


async def start(services: Services) -> None:
    if services.store is not None:
        await services.store.open()


async def stop(services: Services) -> None:
    if services.store is not None:
        await services.store.close()
