"""At start: kill what this node's previous life left running, when another
node already marked those executions ``lost`` (so the store's own restart
recovery, which looks for executions still marked live, finds nothing).

The rows come from ``lost_leftovers``; the processes are found and killed
exactly as restart recovery does it (:func:`service.store.recovery.find_leftovers`:
the leader by pid *and* start time in the same boot, every process carrying
the execution's marker; then the one kill ladder), and each execution's reason
gains what was found.
"""

from __future__ import annotations

import asyncio
import logging

from service.cluster import nodes
from service.cluster.db import ClusterDb
from service.process.ladder import terminate
from service.store.recorder import read_boot_id
from service.store.recovery import Leftover, LeftoverTree, find_leftovers

logger = logging.getLogger(__name__)


async def reap_leftovers(db: ClusterDb, node_id: str, kill_grace_s: float) -> int:
    """Kill the leftovers of this node's executions others marked lost; how
    many processes were found."""
    rows = await db.run(lambda conn: nodes.leftovers_of(conn, node_id))
    if not rows:
        return 0
    leftovers = [Leftover(*row) for row in rows]
    await asyncio.to_thread(find_leftovers, leftovers, read_boot_id())
    targets = [item for item in leftovers if item.pids or item.groups]
    if targets:
        await terminate(LeftoverTree(targets), kill_grace_s, logger)
    killed = sum(len(item.pids) for item in leftovers)
    for item in leftovers:
        logger.warning(
            "killed what was left of an execution another node marked lost",
            extra={
                "execution_id": item.execution_id,
                "killed_pids": sorted(item.pids),
                "killed_groups": sorted(item.groups),
            },
        )
    suffix = f"; {killed} leftover process(es) killed when the node restarted" if killed else None
    await db.run(lambda conn: nodes.forget_leftovers(conn, node_id, suffix))
    return killed
