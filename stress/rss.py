"""Sampling the server's resident memory during a run.

From ``/proc/PID/status`` when the server's PID is known (``--server-pid``;
``ci/stress`` passes it). Otherwise from the server itself, so a remote or
compose-run server is gated too: ``/metrics`` (``process_resident_memory_bytes``,
prometheus-client's process collector), else ``/health`` (a top-level
``rss_bytes``, or ``rss_bytes`` inside ``process`` or ``memory``), both with the
run's token. :class:`RssSampler` runs as one greenlet on the master (or the
only process) and keeps the peak.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

import gevent
from prometheus_client.parser import text_string_to_metric_families

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


def rss_from_metrics(text: str) -> int | None:
    """``process_resident_memory_bytes`` of a Prometheus text scrape, if present."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_resident_memory_bytes":
                return int(sample.value)
    return None


class RssSampler:
    """Samples every ``interval_s`` until stopped; keeps the peak and the count.

    ``base_url`` is the server's HTTP root (``http://host:port``); ``token``
    the run's, for ``/metrics`` and ``/health``.
    """

    def __init__(
        self, pid: int, base_url: str, interval_s: float, token: str | None = None
    ) -> None:
        self.pid = pid
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.samples = 0
        self.source = f"/proc/{pid}/status" if pid else f"{self.base_url}/metrics"
        self._greenlet: gevent.Greenlet | None = None

    def _get(self, path: str) -> bytes:
        request = urllib.request.Request(self.base_url + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and path == "/health":
                # A failing server still reports its figures: exactly when they matter.
                failing: bytes = exc.read()
                return failing
            raise

    def sample(self) -> int | None:
        if self.pid:
            return rss_from_proc(self.pid)
        try:
            value = rss_from_metrics(self._get("/metrics").decode())
            if value is not None:
                return value
        except (OSError, ValueError) as exc:  # 404: metrics turned off; try /health
            logger.debug("RSS sample from %s/metrics failed: %s", self.base_url, exc)
        try:
            value = rss_from_health(json.loads(self._get("/health")))
        except (OSError, ValueError) as exc:
            logger.debug("RSS sample from %s/health failed: %s", self.base_url, exc)
            return None
        self.source = f"{self.base_url}/health"
        return value

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


def peak_of(samplers: list[RssSampler]) -> int | None:
    """The largest peak among ``samplers`` (one per server); None when none
    sampled anything, or when one server was never sampled: a node the gate
    could not see must not pass it unseen."""
    peaks = [sampler.peak_bytes for sampler in samplers]
    if not peaks or any(peak is None for peak in peaks):
        return None
    return max(peak for peak in peaks if peak is not None)
