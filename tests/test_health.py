"""``/health`` checks what it claims: the process's figures, the disk, the
store, the containment backend and the Claude CLI (the real ``fake-claude``
console script, and a missing one)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from service import probes
from service.server import health
from service.server.root import compose
from service.settings import Settings

FAKE_CLAUDE = str(Path(sys.executable).with_name("fake-claude"))


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_reports_process_disk_store_and_claude(make_server: Any) -> None:
    running = make_server({"claude_bin": FAKE_CLAUDE, "cgroup_root": "off"})
    status, document = get(running.http_url + "/health")
    assert status == 200
    assert document["status"] == "ok", document.get("reasons")
    assert "reasons" not in document
    assert document["claude"] == {
        "available": True,
        "path": FAKE_CLAUDE,
        "version": "2.0.0 (Claude Code; fake-claude test double)",
    }
    assert document["containment"] == "process-group"
    # The server's own figures, checked against /proc from outside.
    rss = running.rss_bytes()
    assert 0.5 * rss < document["rss_bytes"] < 2 * rss
    assert document["cpu_seconds"] > 0
    fds = len(os.listdir(f"/proc/{running.pid}/fd"))
    assert abs(document["open_fds"] - fds) <= 8
    assert document["disk_free_bytes"] > 0
    assert document["store"]["state"] == "open"
    assert document["store"]["enabled"] is True
    # /healthz stays a constant, cheap answer.
    assert get(running.http_url + "/healthz") == (200, {"status": "ok"})


def test_missing_claude_and_low_disk_are_degraded(make_server: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-claude")
    running = make_server({"claude_bin": missing, "min_free_disk_bytes": 2**62})
    status, document = get(running.http_url + "/health")
    assert status == 200  # degraded still serves
    assert document["status"] == "degraded"
    assert document["claude"] == {"available": False, "path": None, "version": None}
    reasons = " | ".join(document["reasons"])
    assert "claude CLI not available" in reasons
    assert "min_free_disk_bytes" in reasons
    assert len(document["reasons"]) == 2


def test_claude_that_fails_its_version_is_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\necho 'no licence' >&2\nexit 2\n")
    broken.chmod(0o755)
    status = probes.probe_claude(str(broken), timeout_s=10)
    assert (status.available, status.path, status.version) == (False, str(broken), None)
    assert status.problem == "--version exited 2"
    slow = tmp_path / "slow-claude"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    status = probes.probe_claude(str(slow), timeout_s=0.3)
    assert not status.available
    assert "did not answer" in (status.problem or "")


def test_store_not_open_is_failing(tmp_path: Path) -> None:
    """Services built but never started: the store is enabled and closed."""
    settings = Settings(data_dir=tmp_path, claude_bin=FAKE_CLAUDE, min_free_disk_bytes=0)
    root = compose(settings)
    code, document = asyncio.run(health.report(root))
    assert code == 503
    assert document["status"] == "failing"
    assert document["reasons"] == ["the store is not open"]
    assert document["store"]["state"] == "closed"
