"""What ``/health`` and the stats read about the process and its host.

:class:`ProcessReader` reads the process's own figures (through
prometheus-client's process collector, the same reading ``/metrics``
exports); :func:`disk_free_bytes` the free disk under a path;
:class:`ClaudeProbe` whether the Claude Code CLI answers ``--version``. The
Claude probe runs the CLI in a worker thread with a short timeout and caches
the answer, so a probe storm neither blocks the event loop nor starts a
process per request.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import ProcessCollector


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
