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

The Claude probe runs the CLI in a worker thread with a short timeout and
caches the answer, so a probe storm neither blocks the event loop nor starts
a process per request.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import ProcessCollector

from service import __version__

if TYPE_CHECKING:
    from service.services import Services

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    rss_bytes: int
    cpu_seconds: float
    open_fds: int


class ProcessReader:
    """The server's own RSS, CPU time and open descriptors, from /proc/self."""

    def __init__(self) -> None:
        self._collector = ProcessCollector(registry=None)

    def read(self) -> ProcessFigures:
        values = {
            sample.name: sample.value
            for family in self._collector.collect()
            for sample in family.samples
        }
        return ProcessFigures(
            rss_bytes=int(values.get("process_resident_memory_bytes", 0)),
            cpu_seconds=round(float(values.get("process_cpu_seconds_total", 0.0)), 3),
            open_fds=int(values.get("process_open_fds", 0)),
        )


def disk_free_bytes(path: Path) -> int | None:
    """Free bytes (for an unprivileged writer) on the filesystem holding ``path``,
    or its nearest existing parent; None when none can be read."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


@dataclass(frozen=True, slots=True)
class ClaudeStatus:
    available: bool
    path: str | None
    version: str | None
    problem: str | None

    def public(self) -> dict[str, Any]:
        return {"available": self.available, "path": self.path, "version": self.version}


def probe_claude(command: str, timeout_s: float) -> ClaudeStatus:
    """Run ``command --version``: blocking, for a worker thread."""
    path = shutil.which(command)
    if path is None:
        return ClaudeStatus(False, None, None, f"{command!r} not found")
    try:
        done = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ClaudeStatus(False, path, None, f"--version did not answer in {timeout_s:g} s")
    except OSError as exc:
        return ClaudeStatus(False, path, None, f"cannot run: {exc.strerror or exc}")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        return ClaudeStatus(False, path, None, f"--version exited {done.returncode}")
    return ClaudeStatus(True, path, lines[0].strip(), None)


class ClaudeProbe:
    """The cached answer of :func:`probe_claude`, refreshed after ``ttl_s``."""

    def __init__(self, command: str, timeout_s: float, ttl_s: float) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._status: ClaudeStatus | None = None
        self._checked_mono = 0.0
        self._lock = asyncio.Lock()

    async def status(self) -> ClaudeStatus:
        async with self._lock:  # one probe at a time; the others take its answer
            fresh = time.monotonic() - self._checked_mono < self.ttl_s
            if self._status is None or not fresh:
                self._status = await asyncio.to_thread(probe_claude, self.command, self.timeout_s)
                self._checked_mono = time.monotonic()
            return self._status


def store_state(services: Services) -> tuple[dict[str, Any], str | None, str | None]:
    """The store's part of the report, and a failing / degraded reason if any."""
    store = services.store
    if store is None:
        return {"enabled": False, "state": "disabled"}, None, None
    info = {"enabled": True, **store.health()}
    if not info.get("open"):
        info["state"] = "closed"
        return info, "the store is not open", None
    if info.get("corrupt_moved_to"):
        info["state"] = "recovered"
        moved = info["corrupt_moved_to"]
        return info, None, f"the store was damaged and moved aside to {moved}"
    info["state"] = "open"
    return info, None, None


async def report(services: Services) -> tuple[int, dict[str, Any]]:
    """The ``/health`` document and its HTTP status."""
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
    status = FAILING if failing else DEGRADED if degraded else OK
    document: dict[str, Any] = {"status": status}
    if failing or degraded:
        document["reasons"] = failing + degraded
    document.update(
        {
            "version": __version__,
            "uptime_s": round(time.monotonic() - services.started_mono, 3),
            "connections": len(services.connections),
            "executions": {
                "live": len(supervisor.live),
                "by_state": supervisor.counts_by_state(),
            },
            "limits": settings.limits(),
            "containment": supervisor.containment.name,
            "rss_bytes": figures.rss_bytes,
            "cpu_seconds": figures.cpu_seconds,
            "open_fds": figures.open_fds,
            "disk_free_bytes": free,
            "store": store,
            "claude": claude.public(),
        }
    )
    return (503 if status == FAILING else 200), document
