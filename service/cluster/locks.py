"""One agent per project, cluster-wide: the ``project_locks`` table.

A node takes the project's row before it starts an agent there (``INSERT OR
IGNORE``: the primary key lets exactly one node have it), names the agent's
execution in it once started, and deletes it when the agent ends. A row whose
node was declared dead, left, or restarted is freed by that event
(:mod:`service.cluster.nodes`), so a crash never keeps a project locked past
the lease. Pure functions of a connection.
"""

from __future__ import annotations

from typing import Any

from service.store.dialect import Conn


def take(conn: Conn, project_id: str, node_id: str, now: float) -> dict[str, Any] | None:
    """Take ``project_id`` for ``node_id``; None when taken, else the holder's row."""
    taken = conn.execute(
        "INSERT OR IGNORE INTO project_locks (project_id, node, execution_id, taken_at) "
        "VALUES (?, ?, NULL, ?)",
        (project_id, node_id, now),
    )
    if int(taken.rowcount) == 1:
        return None
    row = conn.execute(
        "SELECT l.node, l.execution_id, l.taken_at, n.state FROM project_locks l "
        "LEFT JOIN nodes n ON n.id = l.node WHERE l.project_id = ?",
        (project_id,),
    ).fetchone()
    if row is None:
        return {"node": None, "execution_id": None, "taken_at": None, "node_state": None}
    return {"node": row[0], "execution_id": row[1], "taken_at": row[2], "node_state": row[3]}


def bind(conn: Conn, project_id: str, node_id: str, execution_id: str) -> None:
    conn.execute(
        "UPDATE project_locks SET execution_id = ? WHERE project_id = ? AND node = ?",
        (execution_id, project_id, node_id),
    )


def release(conn: Conn, project_id: str, node_id: str) -> None:
    """Free the project if ``node_id`` holds it."""
    conn.execute(
        "DELETE FROM project_locks WHERE project_id = ? AND node = ?", (project_id, node_id)
    )


def holder(conn: Conn, project_id: str) -> dict[str, Any] | None:
    """Who holds ``project_id`` (node and agent execution), or None."""
    row = conn.execute(
        "SELECT node, execution_id FROM project_locks WHERE project_id = ?", (project_id,)
    ).fetchone()
    return None if row is None else {"node": row[0], "execution_id": row[1]}
