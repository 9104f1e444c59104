"""Reading executions and transcripts back from the store.

Pure functions of a reader connection, for :meth:`Store.read`. Rows come back
as the dictionaries the wire methods return. Pagination is by cursor: for
executions the opaque cursor is the creation order ``n`` of the last row seen
(newest first); for transcripts it is the last ``seq`` seen.
"""

from __future__ import annotations

import json
from typing import Any

from service.protocol import Frame, process_output
from service.store.dialect import Conn

EXECUTION_COLUMNS = (
    "n, id, connection_id, server_id, command, argv, cwd, project_id, state, reason, pid, pgid, "
    "exit_code, signal, created_at, started_at, ended_at, updated_at, stdout_bytes, "
    "stderr_bytes, last_seq, stored_chunks, stored_bytes, unstored_chunks, unstored_bytes, "
    "node, gap_chunks, gap_bytes, gaps"
)


def _execution(row: tuple[Any, ...], names: list[str]) -> dict[str, Any]:
    record = dict(zip(names, row, strict=True))
    record.pop("n", None)
    record["execution_id"] = record.pop("id")
    record["argv"] = json.loads(record["argv"])
    started, ended = record["started_at"], record["ended_at"]
    record["duration_s"] = round(ended - started, 6) if started and ended else None
    # Chunks past the transcript cap, not those a database outage kept out (the gaps).
    record["transcript_capped"] = record["unstored_chunks"] > record["gap_chunks"]
    record["gaps"] = json.loads(record["gaps"]) if record["gaps"] else []
    return record


def get_execution(conn: Conn, execution_id: str) -> dict[str, Any] | None:
    cursor = conn.execute(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?", (execution_id,)
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return _execution(row, [d[0] for d in cursor.description])


def list_executions(
    conn: Conn,
    *,
    states: list[str] | None,
    project_id: str | None,
    limit: int,
    before_n: int | None,
    node: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` executions, newest first, older than ``before_n`` (and
    run by ``node`` when given); and the cursor of the next page (None on the
    last page)."""
    where: list[str] = []
    args: list[Any] = []
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        args.extend(states)
    if project_id is not None:
        where.append("project_id = ?")
        args.append(project_id)
    if node is not None:
        where.append("node = ?")
        args.append(node)
    if before_n is not None:
        where.append("n < ?")
        args.append(before_n)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cursor = conn.execute(
        f"SELECT {EXECUTION_COLUMNS} FROM executions {clause} ORDER BY n DESC LIMIT ?",
        (*args, limit + 1),
    )
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_n = int(rows[-1][0]) if more and rows else None
    return [_execution(row, names) for row in rows], next_n


def chunk_rows(
    conn: Conn, execution_id: str, after_seq: int, upto_seq: int | None, limit: int
) -> list[tuple[int, str, str, int, float]]:
    """``(seq, stream, data, truncated, ts)`` of the stored chunks with
    ``after_seq < seq <= upto_seq``, in seq order, at most ``limit``."""
    rows: list[tuple[int, str, str, int, float]]
    if upto_seq is None:
        rows = conn.execute(
            "SELECT seq, stream, data, truncated, ts FROM chunks "
            "WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (execution_id, after_seq, limit),
        ).fetchall()
        return rows
    rows = conn.execute(
        "SELECT seq, stream, data, truncated, ts FROM chunks "
        "WHERE execution_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        (execution_id, after_seq, upto_seq, limit),
    ).fetchall()
    return rows


def transcript_page(
    conn: Conn, execution_id: str, after_seq: int, limit: int, max_bytes: int
) -> tuple[list[tuple[int, str, str, int, float]], bool]:
    """Chunks after ``after_seq``: at most ``limit`` and about ``max_bytes`` of
    data (at least one chunk); and whether more follow."""
    cursor = conn.execute(
        "SELECT seq, stream, data, truncated, ts FROM chunks "
        "WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (execution_id, after_seq, limit + 1),
    )
    rows: list[tuple[int, str, str, int, float]] = []
    size = 0
    for row in cursor:
        if len(rows) == limit or (rows and size + len(row[2]) > max_bytes):
            cursor.close()
            return rows, True
        rows.append(row)
        size += len(row[2])
    return rows, False


def chunk_dict(row: tuple[int, str, str, int, float]) -> dict[str, Any]:
    seq, stream, data, truncated, ts = row
    chunk: dict[str, Any] = {"seq": seq, "type": stream, "data": data, "ts": ts}
    if truncated:
        chunk["truncated"] = True
    return chunk


def output_frame(execution_id: str, row: tuple[int, str, str, int, float]) -> Frame:
    """The ``process.output`` notification of a stored chunk, as it went out live."""
    seq, stream, data, truncated, _ = row
    return process_output(execution_id, stream, data, seq, bool(truncated))
