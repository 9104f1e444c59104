"""The periodic task that keeps the store within its age and size limits.

What retention may delete comes from :class:`Trimmer` s, one per kind of row
(finished executions with their transcripts; a project's history entries),
registered by the features that own them. Each pass:

- deletes every candidate older than ``retention_days``;
- then, while the pages in use exceed ``max_store_bytes``, deletes the oldest
  candidates of *all* trimmers together, oldest first, only as many as the
  excess needs; every namespace's pages count toward the cap;
- makes the space reusable (:meth:`Store.reclaim`: on SQLite the freed pages
  go back to the file system with ``PRAGMA incremental_vacuum``, and the WAL
  is kept small by a checkpoint threshold sized from the cap, see
  :func:`~service.store.sqlite.wal_pages_for`; on PostgreSQL a ``VACUUM`` of
  the trimmed tables lets new rows reuse the space).

On PostgreSQL the store's size is its tables' (``pg_total_relation_size``,
indexes and TOAST included: ``/health`` ``store.size_bytes``), but deleting
rows does not shrink it: PostgreSQL reuses the space. Comparing that size
with the cap would delete everything. So there the cap counts the data the
trimmers hold (each trimmer's ``measure``: stored transcript bytes, history
bytes, a fixed overhead per row), and between full passes a pass runs when
the tables' size has grown past the cap and past the last size seen.

Never deleted: a live execution (in this server or marked live in the store),
history of a live execution, and anything younger than ``retention_min_age_s``.
When the cap cannot be met without those, the store says so
(``Store.over_cap``: ``/health`` ``store.over_cap`` with the bytes, and one
WARNING line when it becomes true) instead of emptying itself.

A full pass runs every ``retention_interval_s``; in between, the file size is
checked every second (a ``stat``) and a pass runs as soon as it passes the cap,
so a flood cannot grow the files far past it between two passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from service.process.state import ExecutionState
from service.store.database import Store, StoreError
from service.store.dialect import Conn

logger = logging.getLogger(__name__)

FINAL_STATES = tuple(state.value for state in ExecutionState if state.is_final)
#: Rows deleted per write job, so one pass never holds the writer long.
DELETE_BATCH = 200
#: How often the file size is compared with the cap between full passes.
SIZE_CHECK_S = 1.0
#: Bytes counted for a row besides its data (its cells and index entries).
ROW_OVERHEAD_BYTES = 256

#: ``(timestamp, key, approximate bytes)`` of one row retention may delete.
Candidate = tuple[float, Any, int]
CandidatesFn = Callable[[Conn, float, Collection[str], int], list[Candidate]]
DeleteFn = Callable[[list[Any]], Callable[[Conn], int]]


@dataclass(frozen=True)
class Trimmer:
    """One kind of row that retention may delete, oldest first.

    ``candidates(conn, before_ts, live_execution_ids, limit)`` lists up to
    ``limit`` deletable rows older than ``before_ts``, oldest first, never one
    of (or belonging to) a live execution; ``delete(keys)`` is the write job
    deleting them, returning how many went."""

    name: str
    candidates: CandidatesFn
    delete: DeleteFn
    #: The tables its deletes free space in (for :meth:`Store.reclaim`).
    tables: tuple[str, ...] = ()
    #: In a read: the approximate bytes of all its rows (the cap on PostgreSQL).
    measure: Callable[[Conn], int] | None = None


def _execution_candidates(
    conn: Conn, before: float, live: Collection[str], limit: int
) -> list[Candidate]:
    marks = ",".join("?" * len(FINAL_STATES))
    rows = conn.execute(
        "SELECT COALESCE(ended_at, created_at) AS ts, id, stored_bytes FROM executions "
        f"WHERE state IN ({marks}) AND COALESCE(ended_at, created_at) < ? "
        "ORDER BY ts, n LIMIT ?",
        (*FINAL_STATES, before, limit + len(live)),
    ).fetchall()
    found = [(float(ts), key, int(size or 0) + ROW_OVERHEAD_BYTES) for ts, key, size in rows]
    return [c for c in found if c[1] not in live][:limit]


def _delete_executions(ids: list[Any]) -> Callable[[Conn], int]:
    def job(conn: Conn) -> int:
        conn.executemany("DELETE FROM chunks WHERE execution_id = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM executions WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    return job


#: Finished executions and their transcripts (namespace ``core``).
def _execution_bytes(conn: Conn) -> int:
    row = conn.execute(
        f"SELECT COALESCE(sum(stored_bytes), 0) + count(*) * {ROW_OVERHEAD_BYTES} FROM executions"
    ).fetchone()
    return int(row[0])


EXECUTIONS = Trimmer(
    "executions",
    _execution_candidates,
    _delete_executions,
    ("executions", "chunks"),
    _execution_bytes,
)


@dataclass
class RetentionReport:
    by_age: int = 0
    by_size: int = 0
    #: Rows deleted per trimmer.
    deleted: dict[str, int] = field(default_factory=dict)
    used_bytes: int = 0
    over_cap: bool = False


class Retention:
    def __init__(
        self,
        store: Store,
        live_ids: Callable[[], Collection[str]],
        trimmers: list[Trimmer] | None = None,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self._live_ids = live_ids
        #: What may be deleted; features append theirs before the first pass.
        self.trimmers: list[Trimmer] = list(trimmers) if trimmers is not None else [EXECUTIONS]
        #: PostgreSQL: the tables' size at the last check (see the module's docstring).
        self._last_size = 0

    @property
    def _reuses_space(self) -> bool:
        """Whether deleting rows leaves the tables' size as it is (PostgreSQL)."""
        return self.store.backend == "postgresql"

    async def _measure(self) -> int:
        """The bytes counted against the cap."""
        if not self._reuses_space:
            return await self.store.read(self.store.used_bytes)
        measures = [t.measure for t in self.trimmers if t.measure is not None]
        return await self.store.read(lambda conn: sum(measure(conn) for measure in measures))

    async def run_forever(self) -> None:
        """A full pass every ``retention_interval_s``, and a size pass whenever
        the files pass the cap, until cancelled."""
        next_full = 0.0
        while True:
            now = time.monotonic()
            try:
                if not self.store.available:
                    pass  # the database is down: nothing to trim until it is back
                elif now >= next_full:
                    next_full = now + self.settings.retention_interval_s
                    await self.run_once()
                elif await self._over_cap_now():
                    await self.run_once(by_age=False)
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                logger.warning("retention pass skipped: %s", exc)
            except Exception:
                logger.exception("retention pass failed")
            await asyncio.sleep(min(self.settings.retention_interval_s, SIZE_CHECK_S))

    async def _over_cap_now(self) -> bool:
        """The check between passes: a ``stat`` on SQLite, a catalog query on
        PostgreSQL (whose tables are not files here)."""
        cap = self.settings.max_store_bytes
        if not self._reuses_space:
            return self.store.size_bytes() > cap
        size = await self.store.read(self.store.used_bytes)
        grew, self._last_size = size > self._last_size, max(size, self._last_size)
        return grew and size > cap

    async def _oldest(self, before: float, limit: int) -> list[tuple[Trimmer, Candidate]]:
        live = set(self._live_ids())

        def load(conn: Conn) -> list[tuple[Trimmer, Candidate]]:
            found = [
                (trimmer, candidate)
                for trimmer in self.trimmers
                for candidate in trimmer.candidates(conn, before, live, limit)
            ]
            found.sort(key=lambda item: item[1][0])
            return found

        return await self.store.read(load)

    async def _delete(
        self, chosen: list[tuple[Trimmer, Candidate]], report: RetentionReport
    ) -> int:
        by_trimmer: dict[str, tuple[Trimmer, list[Any]]] = {}
        for trimmer, candidate in chosen:
            by_trimmer.setdefault(trimmer.name, (trimmer, []))[1].append(candidate[1])
        total = 0
        for name, (trimmer, keys) in by_trimmer.items():
            deleted = await self.store.write(trimmer.delete(keys))
            report.deleted[name] = report.deleted.get(name, 0) + deleted
            total += deleted
        return total

    async def run_once(self, *, by_age: bool = True) -> RetentionReport:
        """One pass (``by_age`` False: the size part only); what it deleted."""
        settings = self.settings
        report = RetentionReport()
        now = time.time()
        youngest = now - settings.retention_min_age_s
        if by_age:
            cutoff = min(now - settings.retention_days * 86400, youngest)
            while aged := await self._oldest(cutoff, DELETE_BATCH):
                deleted = await self._delete(aged[:DELETE_BATCH], report)
                report.by_age += deleted
                if not deleted:
                    break
        limit = settings.max_store_bytes
        while True:
            report.used_bytes = await self._measure()
            if report.used_bytes <= limit:
                break
            candidates = await self._oldest(youngest, DELETE_BATCH)
            if not candidates:
                report.over_cap = True
                break
            # Delete only as many as the excess needs, judged by their sizes.
            excess = report.used_bytes - limit
            chosen: list[tuple[Trimmer, Candidate]] = []
            freed = 0
            for item in candidates[:DELETE_BATCH]:
                chosen.append(item)
                freed += item[1][2]
                if freed >= excess:
                    break
            deleted = await self._delete(chosen, report)
            report.by_size += deleted
            if not deleted:
                break
        if report.by_age or report.by_size or not self._reuses_space:
            tables = sorted({table for trimmer in self.trimmers for table in trimmer.tables})
            await self.store.reclaim(tables)
        if report.by_age or report.by_size:
            logger.info(
                "retention deleted executions",
                extra={
                    "by_age": report.by_age,
                    "by_size": report.by_size,
                    "deleted": report.deleted,
                    "used_bytes": report.used_bytes,
                },
            )
        self._set_over_cap(report)
        return report

    def _set_over_cap(self, report: RetentionReport) -> None:
        store = self.store
        was = store.over_cap
        store.over_cap = report.over_cap
        store.over_cap_used_bytes = report.used_bytes if report.over_cap else None
        if report.over_cap and not was:
            logger.warning(
                "store over its cap: what is left is live or younger than "
                "retention_min_age_s, so nothing more is deleted",
                extra={
                    "used_bytes": report.used_bytes,
                    "max_store_bytes": self.settings.max_store_bytes,
                    "retention_min_age_s": self.settings.retention_min_age_s,
                },
            )
        elif was and not report.over_cap:
            logger.info("store back under its cap", extra={"used_bytes": report.used_bytes})
