"""Wiring the store into the service: what happens at build, start and stop.

``install`` (from ``Services.build``) registers the core schema and puts the
:class:`~service.store.recorder.Recorder` among the supervisor's observers.
``start`` (from ``Services.startup``, before the server listens) opens the
database, recovers what an earlier server process left, and starts the
retention task. ``stop`` (from ``Services.shutdown``, after every execution
has ended) closes the database, so the last transitions reach the disk.

:func:`core` gives the wire methods the executor's store parts.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.store.attach import Attacher
from service.store.database import Store, StoreError
from service.store.migrations import MigrationError
from service.store.recorder import Recorder
from service.store.recovery import recover
from service.store.retention import Retention
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE

if TYPE_CHECKING:
    from service.process.supervisor import Supervisor
    from service.services import Services

logger = logging.getLogger(__name__)


@dataclass
class Core:
    """The executor's parts of the store (None without a store)."""

    store: Store | None
    recorder: Recorder | None
    attacher: Attacher
    retention: Retention | None


_cores: weakref.WeakKeyDictionary[Supervisor, Core] = weakref.WeakKeyDictionary()


def core(services: Services) -> Core:
    found = _cores.get(services.supervisor)
    if found is None:
        found = install(services)
    return found


def install(services: Services) -> Core:
    store = services.store
    supervisor = services.supervisor
    recorder: Recorder | None = None
    retention: Retention | None = None
    if store is not None:
        store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
        recorder = Recorder(store, supervisor)
        supervisor.observers.append(recorder)
        retention = Retention(store, lambda: list(supervisor.live))
    found = Core(store, recorder, Attacher(store, recorder, supervisor), retention)
    _cores[supervisor] = found
    return found


async def start(services: Services) -> None:
    parts = core(services)
    store, recorder = parts.store, parts.recorder
    if store is None or recorder is None:
        logger.info("store disabled: no transcripts, no history, attach without replay")
        return
    try:
        await store.open()
    except (StoreError, MigrationError, OSError) as exc:
        # A configuration problem, not a bug: one clear line, no traceback.
        logger.error("cannot open the store: %s", exc, extra={"path": str(store.path)})
        raise SystemExit(1) from None
    recovered = await recover(store, recorder.server_id, recorder.boot_id)
    if recovered:
        logger.warning(
            "marked executions of an earlier server process lost",
            extra={"executions": len(recovered)},
        )
    if parts.retention is not None:
        services.supervisor.spawn_task(parts.retention.run_forever(), name="store:retention")


async def stop(services: Services) -> None:
    if services.store is not None:
        await services.store.close()
