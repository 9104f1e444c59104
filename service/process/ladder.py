"""The kill ladder, written once: for executions, shutdown and restart recovery.

SIGTERM and SIGCONT to every process of the tree (a stopped process cannot act
on SIGTERM until it is continued), ``grace_s`` for them to exit, then SIGKILL
for the whole tree at once (``cgroup.kill`` on the cgroup backend), and a
bounded wait for the kernel to finish. Safe to run on a tree that is already
empty; the caller makes sure it runs once per tree (see
:meth:`~service.process.execution.Execution._ensure_ladder`).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from service.process.containment import Killable

#: After SIGKILL the kernel needs a moment; past this, the tree is reported
#: (a process stuck in uninterruptible sleep cannot be killed any faster).
KILL_WAIT_S = 5.0


async def terminate(
    tree: Killable, grace_s: float, log: logging.Logger | logging.LoggerAdapter[Any]
) -> bool:
    """End every process of ``tree``; True when none is left."""
    if not tree.signal(signal.SIGTERM):
        return not tree.alive()
    tree.signal(signal.SIGCONT)
    if await tree.wait_empty(grace_s):
        return True
    log.info("grace period over; SIGKILL")
    tree.kill()
    if await tree.wait_empty(KILL_WAIT_S):
        return True
    log.warning("processes still alive after SIGKILL", extra={"wait_s": KILL_WAIT_S})
    return False
