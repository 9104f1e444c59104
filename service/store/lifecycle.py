"""Wiring the store into the service: what happens at build, start and stop.

``build`` (from :func:`service.server.root.compose`) registers the core schema and
puts the :class:`~service.store.recorder.Recorder` among the supervisor's
observers and admissions (it records each execution before its spawn).
``start`` (from ``Root.startup``, before the server listens) opens the
database, recovers what an earlier server process left, and starts the
retention task. ``stop`` (from ``Root.shutdown``, after every execution has
ended) closes the database, so the last transitions reach the disk.

The :class:`Core` that ``build`` returns is handed down to the wire methods
as ``Services.core``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.store.admission import Registration
from service.store.attach import Attacher
from service.store.database import Store, StoreError
from service.store.migrations import MigrationError
from service.store.recorder import Recorder
from service.store.recovery import recover
from service.store.retention import Retention
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE

if TYPE_CHECKING:
    from service.process.supervisor import Supervisor

logger = logging.getLogger(__name__)


@dataclass
class Core:
    """The executor's parts of the store (None without a store)."""

    store: Store | None
    recorder: Recorder | None
    attacher: Attacher
    retention: Retention | None


def build(store: Store | None, supervisor: Supervisor, node_id: str | None = None) -> Core:
    """The store parts of ``supervisor``; call once, before ``store`` opens.
    ``node_id``: the cluster node this server is, written into every execution
    row and scoping restart recovery (None: a server alone)."""
    recorder: Recorder | None = None
    retention: Retention | None = None
    if store is not None:
        store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
        recorder = Recorder(store, supervisor, node_id)
        supervisor.observers.append(recorder)
        supervisor.admissions.append(Registration(recorder))
        retention = Retention(store, lambda: list(supervisor.live))
    return Core(store, recorder, Attacher(store, recorder, supervisor), retention)


async def start(parts: Core, supervisor: Supervisor) -> None:
    """Open the store and recover; SystemExit(1) with one line when it cannot open."""
    store, recorder = parts.store, parts.recorder
    if store is None or recorder is None:
        logger.info("store disabled: no transcripts, no history, attach without replay")
        return
    try:
        await store.open()
    except (StoreError, MigrationError, OSError) as exc:
        # A configuration problem, not a bug: one clear line, no traceback.
        logger.error("cannot open the store: %s", exc, extra=store.health_where())
        raise SystemExit(1) from None
    recovered = await recover(store, recorder.server_id, recorder.boot_id, recorder.node_id)
    if recovered:
        logger.warning(
            "marked executions of an earlier server process lost",
            extra={"executions": len(recovered)},
        )
    if parts.retention is not None:
        supervisor.spawn_task(parts.retention.run_forever(), name="store:retention")


async def stop(parts: Core) -> None:
    if parts.store is not None:
        await parts.store.close()
