"""Orphans: processes still carrying the run's marker after the run.

Every command the harness starts has ``NAME=VALUE`` (the run marker) in its
environment, and so has every descendant that does not scrub its
environment. When the run ends and every user has cancelled what it started,
no live process may carry it. :func:`reap` waits a grace period for
stragglers of the kill ladder, then reports the rest with their command
lines and kills them. Only processes on this machine are visible: the scan is
meaningful when the server runs here (``ci/stress`` does so).
"""

from __future__ import annotations

import os
import signal
import time

from service.process import procfs
from stress.gates import Orphan


def scan(marker: str) -> list[Orphan]:
    """Live processes whose environment holds ``marker`` (``NAME=VALUE``)."""
    if not marker:
        return []
    return [Orphan(pid, procfs.cmdline(pid)) for pid in procfs.pids_with_env(marker.encode())]


def reap(marker: str, grace_s: float) -> list[Orphan]:
    """Wait up to ``grace_s`` for marked processes to go; kill and return the rest."""
    deadline = time.monotonic() + grace_s
    left = scan(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = scan(marker)
    for orphan in left:
        try:
            os.kill(orphan.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return left
