"""``/health``: what the service checks about itself, and its verdict.

:func:`report` gathers the process's own figures (through prometheus-client's
process collector, the same reading ``/metrics`` exports), the free disk under
the data directory, the store's state, the containment backend and whether the
Claude Code CLI answers ``--version``, and turns them into a ``status``:

- ``failing`` (HTTP 503): the service cannot do its job (the store is enabled
  but not open);
- ``degraded`` (HTTP 200) with ``reasons``: it works, but something needs an
  operator (little disk left, the Claude CLI missing, a damaged store moved
  aside at start);
- ``ok`` otherwise.

The probes themselves (the process's figures, the free disk, the Claude CLI)
are in :mod:`service.probes`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from service import __version__
from service.probes import disk_free_bytes

if TYPE_CHECKING:
    from service.server.root import Root
    from service.services import Services

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"


def store_state(services: Services) -> tuple[dict[str, Any], str | None, str | None]:
    """The store's part of the report, and a failing / degraded reason if any."""
    store = services.store
    if store is None:
        return {"enabled": False, "state": "disabled"}, None, None
    info = {"enabled": True, **store.health()}
    if not info.get("open"):
        info["state"] = "closed"
        return info, "the store is not open", None
    if not info.get("available", True):
        # Executions run and stream live; what needs the store gets -32007.
        info["state"] = "unreachable"
        return info, None, "the store's database is unreachable (reconnecting)"
    if info.get("corrupt_moved_to"):
        info["state"] = "recovered"
        moved = info["corrupt_moved_to"]
        return info, None, f"the store was damaged and moved aside to {moved}"
    info["state"] = "open"
    return info, None, None


async def report(root: Root) -> tuple[int, dict[str, Any]]:
    """The ``/health`` document and its HTTP status."""
    services = root.services
    settings = services.settings
    supervisor = services.supervisor
    failing: list[str] = []
    degraded: list[str] = []

    store, store_failing, store_degraded = store_state(services)
    failing += [store_failing] if store_failing else []
    degraded += [store_degraded] if store_degraded else []

    free = disk_free_bytes(settings.data_dir)
    if free is None:
        degraded.append(f"cannot read free disk space under {settings.data_dir}")
    elif free < settings.min_free_disk_bytes:
        degraded.append(
            f"{free} bytes free under {settings.data_dir} "
            f"(below min_free_disk_bytes {settings.min_free_disk_bytes})"
        )

    claude = await services.claude_probe.status()
    if not claude.available:
        degraded.append(f"claude CLI not available: {claude.problem}")

    figures = services.process_reader.read()
    cluster = services.cluster.health() if services.cluster is not None else None
    bus = cluster["bus"] if cluster is not None else None
    if bus is not None and not bus["connected"]:
        degraded.append(f"the cluster bus is not connected: {bus['last_error'] or 'connecting'}")
    status = FAILING if failing else DEGRADED if degraded else OK
    document: dict[str, Any] = {"status": status}
    if failing or degraded:
        document["reasons"] = failing + degraded
    document.update(
        {
            "version": __version__,
            "uptime_s": round(time.monotonic() - services.started_mono, 3),
            "connections": len(root.connections),
            "executions": {
                "live": len(supervisor.live),
                "by_state": supervisor.counts_by_state(),
            },
            "limits": settings.limits(),
            "containment": supervisor.containment.name,
            # What keeps busy children from starving the server (docs/performance.md).
            "children_cpu": {
                "cgroup": None if supervisor.cpu is None else supervisor.cpu.public(),
                "nice": settings.child_nice,
            },
            "rss_bytes": figures.rss_bytes,
            "cpu_seconds": figures.cpu_seconds,
            "open_fds": figures.open_fds,
            "disk_free_bytes": free,
            "store": store,
            "claude": claude.public(),
        }
    )
    if cluster is not None:
        # This node's view of the cluster: nodes, leases, live executions per node.
        document["cluster"] = cluster
    return (503 if status == FAILING else 200), document
