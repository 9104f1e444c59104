"""The ``nodes`` table: joining, the heartbeat lease, leaving, and declaring
a silent node dead. Pure functions of a connection (run by
:class:`~service.cluster.db.ClusterDb`), SQL written once for both engines.

Declaring a node dead is one transaction: the conditional ``UPDATE nodes SET
state = 'dead' ... WHERE state = 'up' AND expires_at < now`` succeeds on
exactly one node of the cluster (PostgreSQL locks the row; the second
updater re-checks ``state`` once the first commits and finds nothing), and
only that node then marks the dead node's live executions ``lost``, records
them for the dead node to kill at its restart, frees its project locks and
notifies ``cc_state`` for each execution.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.process.state import ExecutionState
from service.store.dialect import Conn

LIVE_STATES = tuple(state.value for state in ExecutionState if state.is_live)
NODE_COLUMNS = (
    "id, state, host, pid, server_id, started_at, heartbeat_at, lease_s, expires_at, "
    "live_executions, max_executions, ended_at, reason"
)
#: ``notify(conn, channel, payload)`` inside a transaction (the store's).
Notify = Callable[[Conn, str, str], None]


class NodeIdInUse(Exception):
    """Another server holds this node id (a live lease from another host)."""


@dataclass(frozen=True)
class Me:
    """This node as its row describes it."""

    node_id: str
    host: str
    pid: int
    server_id: str
    lease_s: float
    max_executions: int


@dataclass(frozen=True)
class Death:
    """A node this node declared dead, and the executions it marked lost."""

    node_id: str
    expired_at: float
    reason: str
    executions: list[str]


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def join(conn: Conn, me: Me, now: float) -> str | None:
    """Write this node's row ``up`` with a fresh lease; what its previous row
    said (``state`` of the last life), or None for a new node. NodeIdInUse
    when another host holds the id under a live lease."""
    row = conn.execute(
        "SELECT state, host, pid, expires_at FROM nodes WHERE id = ?", (me.node_id,)
    ).fetchone()
    if row is not None:
        state, host, pid, expires_at = row
        if state == "up" and expires_at > now and host != me.host:
            raise NodeIdInUse(
                f"node id {me.node_id!r} is held by host {host} (pid {pid}) until "
                f"{iso(expires_at)}: give this server another CC_EXECUTOR_NODE_ID"
            )
    conn.execute(
        f"INSERT INTO nodes ({NODE_COLUMNS}) VALUES "
        "(?, 'up', ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, NULL) "
        "ON CONFLICT(id) DO UPDATE SET state = 'up', host = excluded.host, pid = excluded.pid, "
        "server_id = excluded.server_id, started_at = excluded.started_at, "
        "heartbeat_at = excluded.heartbeat_at, lease_s = excluded.lease_s, "
        "expires_at = excluded.expires_at, live_executions = 0, "
        "max_executions = excluded.max_executions, ended_at = NULL, reason = NULL",
        (
            me.node_id,
            me.host,
            me.pid,
            me.server_id,
            now,
            now,
            me.lease_s,
            now + me.lease_s,
            me.max_executions,
        ),
    )
    # Whatever locks a previous life of this node held: nothing of it runs now.
    conn.execute("DELETE FROM project_locks WHERE node = ?", (me.node_id,))
    return None if row is None else str(row[0])


def renew(conn: Conn, me: Me, now: float, live: int) -> bool:
    """Renew the lease; False when the row is no longer this server's ``up``
    row (another node declared it dead meanwhile)."""
    cursor = conn.execute(
        "UPDATE nodes SET heartbeat_at = ?, expires_at = ?, live_executions = ? "
        "WHERE id = ? AND server_id = ? AND state = 'up'",
        (now, now + me.lease_s, live, me.node_id, me.server_id),
    )
    return int(cursor.rowcount) == 1


def leave(conn: Conn, me: Me, now: float) -> None:
    conn.execute(
        "UPDATE nodes SET state = 'down', ended_at = ?, reason = 'left', live_executions = 0 "
        "WHERE id = ? AND server_id = ? AND state = 'up'",
        (now, me.node_id, me.server_id),
    )
    conn.execute("DELETE FROM project_locks WHERE node = ?", (me.node_id,))


def all_nodes(conn: Conn) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY id")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def sweep(conn: Conn, me: Me, now: float, notify: Notify) -> list[Death]:
    """Declare dead every other ``up`` node whose lease expired; what this
    node declared (another node may have won some of them)."""
    expired = conn.execute(
        "SELECT id, expires_at FROM nodes WHERE state = 'up' AND expires_at < ? AND id != ?",
        (now, me.node_id),
    ).fetchall()
    deaths = []
    for node_id, expires_at in expired:
        reason = f"node {node_id}'s lease expired at {iso(expires_at)} (declared by {me.node_id})"
        won = conn.execute(
            "UPDATE nodes SET state = 'dead', ended_at = ?, reason = ? "
            "WHERE id = ? AND state = 'up' AND expires_at < ?",
            (now, reason, node_id, now),
        )
        if int(won.rowcount) != 1:
            continue  # renewed meanwhile, or another node was first
        deaths.append(Death(node_id, expires_at, reason, _mark_lost(conn, node_id, reason, now)))
        conn.execute("DELETE FROM project_locks WHERE node = ?", (node_id,))
    for death in deaths:
        for execution_id in death.executions:
            notify(conn, "cc_state", f"{execution_id}:lost")
    return deaths


def _mark_lost(conn: Conn, node_id: str, reason: str, now: float) -> list[str]:
    marks = ",".join("?" * len(LIVE_STATES))
    ids = [
        str(row[0])
        for row in conn.execute(
            f"SELECT id FROM executions WHERE node = ? AND state IN ({marks})",
            (node_id, *LIVE_STATES),
        ).fetchall()
    ]
    if not ids:
        return ids
    conn.executemany(
        "UPDATE executions SET state = 'lost', reason = ?, ended_at = COALESCE(ended_at, ?), "
        f"updated_at = ? WHERE id = ? AND state IN ({marks})",
        [(reason, now, now, execution_id, *LIVE_STATES) for execution_id in ids],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO lost_leftovers (execution_id, node, marked_at) VALUES (?, ?, ?)",
        [(execution_id, node_id, now) for execution_id in ids],
    )
    return ids


def leftovers_of(conn: Conn, node_id: str) -> list[tuple[Any, ...]]:
    """``(id, pid, pgid, start_ticks, boot_id, server_id, state)`` of this
    node's executions that another node marked lost while it was away."""
    rows: list[tuple[Any, ...]] = conn.execute(
        "SELECT e.id, e.pid, e.pgid, e.start_ticks, e.boot_id, e.server_id, e.state "
        "FROM lost_leftovers l JOIN executions e ON e.id = l.execution_id WHERE l.node = ?",
        (node_id,),
    ).fetchall()
    return rows


def forget_leftovers(conn: Conn, node_id: str, reason_suffix: str | None) -> None:
    """The leftovers of ``node_id`` are dealt with; ``reason_suffix`` is added
    to each execution's reason (what the restart found and killed)."""
    if reason_suffix:
        conn.execute(
            "UPDATE executions SET reason = reason || ? WHERE id IN "
            "(SELECT execution_id FROM lost_leftovers WHERE node = ?)",
            (reason_suffix, node_id),
        )
    conn.execute("DELETE FROM lost_leftovers WHERE node = ?", (node_id,))
