"""The Locust harness against several nodes, for real.

- Locust with two servers in ``--host``: the users of a class spread over both
  (each server ran executions of its own), the RSS of both is sampled.
- ``ci/stress --cluster``: a throwaway PostgreSQL, two nodes sharing it, and
  ClusterUser among the users: it starts a job on one node and attaches,
  pauses, resumes and cancels it from the other, every check passing; the
  gates (orphans included) hold. PostgreSQL missing is an error, not a skip
  (``bash ci/install`` installs it; tests/pg.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.client import ExecutorClient
from tests.utils import RunningServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def marker_arg(marker: dict[str, str]) -> str:
    ((name, value),) = marker.items()
    return f"{name}={value}"


async def executions_on(node: RunningServer) -> int:
    async with ExecutorClient(node.url) as client:
        listing = await client.call("executions.list", {"limit": 100})
    return len(listing["executions"])


def test_users_spread_over_the_hosts_given(
    make_server: Any, tmp_path: Path, marker: dict[str, str]
) -> None:
    nodes = [make_server() for _ in range(2)]
    summary_path = tmp_path / "summary.json"
    command = [
        *(str(BIN / "locust"), "-f", str(ROOT / "stress" / "locustfile.py")),
        *("--host", ",".join(node.url for node in nodes)),
        *("--server-pid", ",".join(str(node.pid) for node in nodes)),
        *("--headless", "--only-summary", "-u", "4", "-r", "4", "-t", "6s"),
        *("--stress-users", "JobUser", "--job-argv", "sleep 0.3"),
        *("--run-marker", marker_arg(marker), "--summary-json", str(summary_path)),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert summary_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert proc.returncode == 0 and summary["passed"], summary["gates"]
    counts = [asyncio.run(executions_on(node)) for node in nodes]
    # Four users, two per node, each running `sleep 0.3` for 6 s.
    assert all(count >= 4 for count in counts), counts
    assert summary["peak_rss_bytes"] is not None  # both nodes sampled (else None)


@pytest.mark.pg
def test_ci_stress_cluster_runs_cluster_user_across_two_nodes(
    tmp_path: Path, marker: dict[str, str]
) -> None:
    reports = tmp_path / "reports"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CC_EXECUTOR_", "STRESS_"))},
        "STRESS_REPORTS": str(reports),
        "STRESS_DURATION": "20",
        "STRESS_USERS": "4",
        "STRESS_SPAWN_RATE": "4",
        "STRESS_SCENARIOS": "ClusterUser,ControlUser,StreamUser",
        "CC_EXECUTOR_KILL_GRACE_S": "2",
        "CC_EXECUTOR_PASS_ENV": json.dumps(["PATH", "HOME", "LANG", next(iter(marker))]),
    }
    proc = subprocess.run(
        [
            *("bash", str(ROOT / "ci" / "stress"), "--cluster"),
            *("--", "--run-marker", marker_arg(marker)),
            *("--job-seconds", "15", "--seq-lines", "3000", "--pause-hold-seconds", "1"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    summary_path = reports / "cluster-summary.json"
    assert summary_path.exists(), output
    summary = json.loads(summary_path.read_text())
    failed = [gate for gate in summary["gates"] if not gate["passed"]]
    assert proc.returncode == 0 and summary["passed"], f"failed gates: {failed}\n{output}"
    assert "ClusterUser" not in summary["skipped"], summary["skipped"]
    rows = {row["name"]: row for row in summary["stats"]}
    failures = (reports / "cluster_failures.csv").read_text()
    for name in (
        "connect (other node)",
        "attach (other node)",
        "attach: first replayed chunk",
        "verify: attached stream intact",
        "control (other node)",
        "verify: group stopped (other node's PAUSE)",
        "verify: status paused (other node)",
        "verify: paused silent (both nodes)",
        "verify: output resumed (other node)",
        "verify: cancelled (both nodes)",
    ):
        assert name in rows and rows[name]["requests"] > 0, (name, sorted(rows))
        assert rows[name]["failures"] == 0, (rows[name], failures)
    assert summary["orphans"] == []
    for node in ("node-a", "node-b"):
        assert (reports / "cluster-nodes" / f"{node}.log").stat().st_size > 0
