"""The cluster's tables (namespace ``cluster``), the same on both engines.

``nodes``: one row per node that ever joined, with its heartbeat lease
(``expires_at``, wall-clock seconds: the nodes' clocks must agree to well
within a lease, which NTP gives) and its state: ``up`` while it renews the
lease, ``down`` once it left cleanly, ``dead`` once another node found its
lease expired and marked its live executions ``lost`` (the conditional
``UPDATE ... WHERE state = 'up'`` that flips it is what makes that happen
exactly once across the cluster).

``project_locks``: the one agent per project rule, cluster-wide: a row per
project with a running agent, naming its node (the primary key refuses a
second one anywhere). Freed when the agent ends, or when its node is declared
dead or restarts.

``lost_leftovers``: executions another node marked lost on a dead node's
behalf. The processes may still be there (the node's machine did not die,
its server did): the node kills them when it restarts, then deletes the rows.
"""

from __future__ import annotations

from service.store.dialect import Migration

CLUSTER_NAMESPACE = "cluster"

CLUSTER_MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        server_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        lease_s REAL NOT NULL,
        expires_at REAL NOT NULL,
        live_executions INTEGER NOT NULL DEFAULT 0,
        max_executions INTEGER NOT NULL DEFAULT 0,
        ended_at REAL,
        reason TEXT
    );
    CREATE TABLE project_locks (
        project_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        execution_id TEXT,
        taken_at REAL NOT NULL
    );
    CREATE INDEX project_locks_node ON project_locks(node);
    CREATE TABLE lost_leftovers (
        execution_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        marked_at REAL NOT NULL
    );
    CREATE INDEX lost_leftovers_node ON lost_leftovers(node);
    """,
]
