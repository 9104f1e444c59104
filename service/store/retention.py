"""The periodic task that keeps the store within its age and size limits.

Every ``retention_interval_s``: finished executions that ended more than
``retention_days`` ago are deleted with their transcripts; then, while the
pages in use exceed ``max_store_bytes``, the oldest finished executions are
deleted too. An execution that is live in this server, or that the store
still marks live, is never deleted. Freed pages go back to the file system
(``PRAGMA incremental_vacuum``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from service.process.state import ExecutionState
from service.store.database import Store

logger = logging.getLogger(__name__)

FINAL_STATES = tuple(state.value for state in ExecutionState if state.is_final)
#: Executions deleted per write job, so one pass never holds the writer long.
DELETE_BATCH = 50


@dataclass
class RetentionReport:
    by_age: int = 0
    by_size: int = 0
    used_bytes: int = 0


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages that hold data (not the free list)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def _delete(ids: list[str]) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        conn.executemany("DELETE FROM chunks WHERE execution_id = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM executions WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    return job


def _sizes(ids: list[str]) -> Callable[[sqlite3.Connection], dict[str, int]]:
    def read(conn: sqlite3.Connection) -> dict[str, int]:
        marks = ",".join("?" * len(ids))
        query = f"SELECT id, stored_bytes FROM executions WHERE id IN ({marks})"
        return dict(conn.execute(query, ids).fetchall())

    return read


def _vacuum(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA incremental_vacuum").fetchall()


class Retention:
    def __init__(self, store: Store, live_ids: Callable[[], Collection[str]]) -> None:
        self.store = store
        self.settings = store.settings
        self._live_ids = live_ids

    async def run_forever(self) -> None:
        """Run a pass every ``retention_interval_s`` until cancelled."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("retention pass failed")
            await asyncio.sleep(self.settings.retention_interval_s)

    async def _finished_oldest(self, where: str, args: tuple[object, ...]) -> list[str]:
        live = set(self._live_ids())
        marks = ",".join("?" * len(FINAL_STATES))

        def load(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                f"SELECT id FROM executions WHERE state IN ({marks}) AND {where} "
                "ORDER BY n LIMIT ?",
                (*FINAL_STATES, *args, DELETE_BATCH + len(live)),
            ).fetchall()
            return [row[0] for row in rows]

        return [i for i in await self.store.read(load) if i not in live][:DELETE_BATCH]

    async def run_once(self) -> RetentionReport:
        """One pass; what it deleted."""
        report = RetentionReport()
        cutoff = time.time() - self.settings.retention_days * 86400
        while True:
            ids = await self._finished_oldest("COALESCE(ended_at, created_at) < ?", (cutoff,))
            if not ids:
                break
            report.by_age += await self.store.write(_delete(ids))
        limit = self.settings.max_store_bytes
        while True:
            report.used_bytes = await self.store.read(used_bytes)
            if report.used_bytes <= limit:
                break
            ids = await self._finished_oldest("1", ())
            if not ids:
                break
            # Delete only as many as the excess needs, judged by their transcripts.
            excess = report.used_bytes - limit
            sizes = await self.store.read(_sizes(ids))
            chosen: list[str] = []
            freed = 0
            for execution_id in ids:
                chosen.append(execution_id)
                freed += int(sizes.get(execution_id) or 0) + 512
                if freed >= excess:
                    break
            report.by_size += await self.store.write(_delete(chosen))
        if report.by_age or report.by_size:
            await self.store.write(_vacuum)
            logger.info(
                "retention deleted executions",
                extra={
                    "by_age": report.by_age,
                    "by_size": report.by_size,
                    "used_bytes": report.used_bytes,
                },
            )
        return report
