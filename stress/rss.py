"""Sampling the server's resident memory during a run.

From ``/proc/PID/status`` when the server's PID is known (``--server-pid``;
``ci/stress`` passes it), otherwise from ``/health`` when the server reports
its RSS there (a top-level ``rss_bytes``, or ``rss_bytes`` inside ``process``
or ``memory``). :class:`RssSampler` runs as one greenlet on the master (or
the only process) and keeps the peak.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

import gevent

logger = logging.getLogger(__name__)


def rss_from_proc(pid: int) -> int | None:
    """VmRSS of ``pid`` in bytes; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_from_health(health: dict[str, Any]) -> int | None:
    """The RSS a ``/health`` document reports, if it reports one."""
    for holder in (health, health.get("process"), health.get("memory")):
        if isinstance(holder, dict) and isinstance(holder.get("rss_bytes"), int):
            return int(holder["rss_bytes"])
    return None


class RssSampler:
    """Samples every ``interval_s`` until stopped; keeps the peak and the count."""

    def __init__(self, pid: int, health_url: str, interval_s: float) -> None:
        self.pid = pid
        self.health_url = health_url
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.samples = 0
        self.source = f"/proc/{pid}/status" if pid else health_url
        self._greenlet: gevent.Greenlet | None = None

    def sample(self) -> int | None:
        if self.pid:
            return rss_from_proc(self.pid)
        try:
            with urllib.request.urlopen(self.health_url, timeout=5) as response:
                return rss_from_health(json.loads(response.read()))
        except (OSError, ValueError) as exc:
            logger.debug("RSS sample from %s failed: %s", self.health_url, exc)
            return None

    def take(self) -> None:
        value = self.sample()
        if value is not None:
            self.samples += 1
            self.peak_bytes = value if self.peak_bytes is None else max(self.peak_bytes, value)

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None
        self.take()

    def _loop(self) -> None:
        while True:
            self.take()
            gevent.sleep(self.interval_s)
