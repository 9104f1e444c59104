"""The projects namespace of the store: tables, and the jobs that use them.

Two tables: ``projects`` (the registry, with each project's Claude session id
and counters) and ``project_messages`` (the history: prompts sent, every agent
event as the CLI printed it, results), ordered by an increasing id that is
also the pagination cursor.

Writes are submitted to the store's single writer in order and never awaited
on the hot path (an agent event must not wait for a disk); readers that need
to see them first await :meth:`Storage.write` of a no-op, which resolves only
after everything submitted before it is committed.

When the durable store is disabled (``store_enabled`` false), :class:`MemoryStore`
runs the same SQL on an in-memory SQLite database, so the feature behaves the
same, minus surviving a restart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, TypeVar

import orjson

from service.store.dialect import Conn, Migration
from service.store.migrations import apply_migrations
from service.store.retention import Trimmer
from service.store.rows import PROJECTS_CHANNEL

T = TypeVar("T")
Job = Callable[[Conn], Any]
#: ``Store.notify``: a notice sent when the job's transaction commits.
Notify = Callable[[Conn, str, str], None]

NAMESPACE = "projects"
MIGRATIONS = [
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        session_id TEXT,
        runs INTEGER NOT NULL DEFAULT 0,
        turns INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        last_run_at REAL,
        last_status TEXT
    );
    CREATE TABLE project_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id TEXT NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        execution_id TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX project_messages_by_project ON project_messages(project_id, id);
    CREATE INDEX project_messages_by_time ON project_messages(project_id, ts);
    """
]

PROJECT_COLUMNS = (
    "id",
    "name",
    "path",
    "created_at",
    "session_id",
    "runs",
    "turns",
    "cost_usd",
    "last_run_at",
    "last_status",
)


class Storage(Protocol):
    """What the projects feature needs of a store (:class:`service.store.Store`)."""

    def register_schema(self, namespace: str, migrations: Sequence[Migration]) -> None: ...

    async def read(self, fn: Callable[[Conn], T]) -> T: ...

    async def write(self, fn: Callable[[Conn], T]) -> T: ...

    def submit(self, fn: Job, weight: int = 1) -> None: ...

    def notify(self, conn: Conn, channel: str, payload: str) -> None: ...


class MemoryStore:
    """The :class:`Storage` of a server without a durable store: one in-memory
    SQLite connection used on the event loop (every statement is short)."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", isolation_level=None)
        self._schemas: dict[str, list[Migration]] = {}

    def register_schema(self, namespace: str, migrations: Sequence[Migration]) -> None:
        self._schemas[namespace] = list(migrations)

    async def open(self) -> None:
        apply_migrations(self._conn, self._schemas)

    async def read(self, fn: Callable[[Conn], T]) -> T:
        return fn(self._conn)

    async def write(self, fn: Callable[[Conn], T]) -> T:
        self._conn.execute("BEGIN")
        try:
            result = fn(self._conn)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return result

    def submit(self, fn: Job, weight: int = 1) -> None:
        self._conn.execute("BEGIN")
        try:
            fn(self._conn)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def notify(self, conn: Conn, channel: str, payload: str) -> None:
        """Nobody listens to a store in memory."""

    async def close(self) -> None:
        self._conn.close()


# --- jobs ------------------------------------------------------------------------


def load_projects(conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {', '.join(PROJECT_COLUMNS)} FROM projects ORDER BY name")
    return [dict(zip(PROJECT_COLUMNS, row, strict=True)) for row in rows]


def last_run_states(conn: Conn) -> dict[str, str]:
    """The state of each project's newest execution (the ``core`` namespace's
    table, present with the durable store only)."""
    rows = conn.execute(
        "SELECT project_id, state FROM executions WHERE n IN "
        "(SELECT max(n) FROM executions WHERE project_id IS NOT NULL GROUP BY project_id)"
    ).fetchall()
    return {str(project_id): str(state) for project_id, state in rows}


def insert_project(record: dict[str, Any], notify: Notify) -> Job:
    """Insert the project; the other nodes of a cluster hear of it."""

    def job(conn: Conn) -> None:
        marks = ", ".join("?" for _ in PROJECT_COLUMNS)
        conn.execute(
            f"INSERT INTO projects ({', '.join(PROJECT_COLUMNS)}) VALUES ({marks})",
            [record[name] for name in PROJECT_COLUMNS],
        )
        notify(conn, PROJECTS_CHANNEL, record["id"])

    return job


def update_project(project_id: str, fields: dict[str, Any]) -> Job:
    names = [name for name in fields if name in PROJECT_COLUMNS and name != "id"]

    def job(conn: Conn) -> None:
        assignments = ", ".join(f"{name} = ?" for name in names)
        conn.execute(
            f"UPDATE projects SET {assignments} WHERE id = ?",
            [*(fields[name] for name in names), project_id],
        )

    return job


def delete_project(project_id: str, notify: Notify) -> Job:
    """Delete the project and its messages; the other nodes of a cluster hear of it."""

    def job(conn: Conn) -> None:
        conn.execute("DELETE FROM project_messages WHERE project_id = ?", (project_id,))
        conn.execute("DELETE FROM projects WHERE id = ?", (project_id,))
        notify(conn, PROJECTS_CHANNEL, project_id)

    return job


def append_message(
    project_id: str, ts: float, kind: str, execution_id: str | None, data: str
) -> Job:
    """A history entry; ``data`` is JSON text (an event line as printed)."""

    def job(conn: Conn) -> None:
        conn.execute(
            "INSERT INTO project_messages (project_id, ts, kind, execution_id, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (project_id, ts, kind, execution_id, data),
        )

    return job


def read_messages(
    project_id: str,
    after_id: int,
    since: float | None,
    limit: int,
    *,
    page_bytes: int,
    message_bytes: int,
) -> Callable[[Conn], tuple[list[dict[str, Any]], bool]]:
    """Up to ``limit`` messages after ``after_id`` (and at or after ``since``),
    oldest first, and whether more follow.

    A page stops growing past ``page_bytes`` of data (it always holds at least
    one message). A message larger than ``message_bytes`` (more than a client's
    queue may hold in one response) comes as a summary flagged ``oversized``;
    its raw line stays in the execution's transcript.
    """

    def job(conn: Conn) -> tuple[list[dict[str, Any]], bool]:
        sql = (
            "SELECT id, ts, kind, execution_id, data FROM project_messages "
            "WHERE project_id = ? AND id > ?"
        )
        args: list[Any] = [project_id, after_id]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit + 1)
        messages: list[dict[str, Any]] = []
        total = 0
        for row_id, ts, kind, execution_id, data in conn.execute(sql, args):
            size = min(len(data), message_bytes)
            if len(messages) >= limit or (messages and total + size > page_bytes):
                return messages, True
            total += size
            message = {"id": row_id, "ts": ts, "kind": kind, "execution_id": execution_id}
            value = orjson.loads(data)
            if len(data) > message_bytes and isinstance(value, dict):
                keys = ("type", "subtype", "session_id", "uuid")
                message["data"] = {key: value[key] for key in keys if key in value}
                message["oversized"] = True
                message["bytes"] = len(data)
            else:
                message["data"] = value
            messages.append(message)
        return messages, False

    return job


# --- retention -----------------------------------------------------------------------


def _message_candidates(
    conn: Conn, before: float, live: Collection[str], limit: int
) -> list[tuple[float, Any, int]]:
    live_ids = list(live)
    marks = ",".join("?" * len(live_ids))
    spare = f"AND (execution_id IS NULL OR execution_id NOT IN ({marks}))" if live_ids else ""
    rows = conn.execute(
        f"SELECT ts, id, length(data) FROM project_messages WHERE ts < ? {spare} "
        "ORDER BY id LIMIT ?",
        (before, *live_ids, limit),
    ).fetchall()
    return [(float(ts), row_id, int(size) + 64) for ts, row_id, size in rows]


def _delete_messages(ids: list[Any]) -> Callable[[Conn], int]:
    def job(conn: Conn) -> int:
        conn.executemany("DELETE FROM project_messages WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    return job


#: A project's history entries, for :class:`service.store.retention.Retention`:
#: they count toward the store's cap and go oldest first with the executions.
def _message_bytes(conn: Conn) -> int:
    row = conn.execute(
        "SELECT COALESCE(sum(length(data)), 0) + count(*) * 64 FROM project_messages"
    ).fetchone()
    return int(row[0])


MESSAGES_TRIMMER = Trimmer(
    "project_messages",
    _message_candidates,
    _delete_messages,
    ("project_messages",),
    _message_bytes,
)
