"""The Locust harness run for real: ``ci/stress`` headless against its own
server, 50 users really concurrent, and a master with two workers.

Each run is short; the full seed scenarios (``make stress-t02``,
``make stress-t03``) are CI's own job. Every command the harness starts
carries this test's leak marker (``--run-marker``), so the ``marker`` fixture
also checks that nothing was left behind.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import ServerConnection, serve

from tests.utils import RunningServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def marker_arg(marker: dict[str, str]) -> str:
    ((name, value),) = marker.items()
    return f"{name}={value}"


def run_ci_stress(
    tmp_path: Path,
    marker: dict[str, str],
    env: dict[str, str],
    ci_args: list[str],
    locust_args: list[str],
    timeout: float = 120,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    reports = tmp_path / "reports"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CC_EXECUTOR_", "STRESS_"))},
        "STRESS_REPORTS": str(reports),
        "CC_EXECUTOR_KILL_GRACE_S": "2",
        **env,
    }
    proc = subprocess.run(
        [
            *("bash", str(ROOT / "ci" / "stress"), *ci_args),
            *("--", "--run-marker", marker_arg(marker), *locust_args),
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    summary_path = reports / "stress-summary.json"
    assert summary_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(summary_path.read_text())


def test_headless_smoke_run_passes_its_gates(tmp_path: Path, marker: dict[str, str]) -> None:
    """``ci/stress`` end to end: server up, every user, reports, summary, gates."""
    proc, summary = run_ci_stress(
        tmp_path,
        marker,
        {"STRESS_DURATION": "20", "STRESS_USERS": "5", "STRESS_SPAWN_RATE": "5"},
        [],
        ["--job-seconds", "20", "--seq-lines", "5000", "--reconnect-lines", "40"],
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert summary["passed"] and summary["orphans"] == [], summary["gates"]
    assert summary["peak_rss_bytes"] and summary["peak_rss_bytes"] < 100_000_000
    names = {row["name"] for row in summary["stats"]}
    for name in (
        "connect",
        "execute",
        "control",
        "status",
        "verify: group stopped",
        "verify: paused silent",
        "verify: output resumed",
        "verify: cancelled",
        "verify: group gone",
        "stream: first output",
        "stream: complete",
        "verify: stream intact",
    ):
        assert name in names, (name, sorted(names))
    # ReconnectUser and AgentUser either ran or say they were skipped; never silently passed.
    for user, step in (
        ("ReconnectUser", "verify: nothing missing"),
        ("AgentUser", "verify: agent result"),
    ):
        assert (step in names) != (user in summary["skipped"]), (user, summary["skipped"])
    assert "=== cc-executor stress summary ===" in proc.stdout
    assert "stress: PASSED" in proc.stdout
    reports = tmp_path / "reports"
    assert (reports / "stress.html").stat().st_size > 10_000
    assert (reports / "stress_stats.csv").read_text().count("\n") > 10


def locust(
    server: RunningServer, tmp_path: Path, marker: dict[str, str], *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary_path = tmp_path / "summary.json"
    command = [
        str(BIN / "locust"),
        "-f",
        str(ROOT / "stress" / "locustfile.py"),
        "--host",
        server.url,
        "--headless",
        "--only-summary",
        "--server-pid",
        str(server.pid),
        "--run-marker",
        marker_arg(marker),
        "--summary-json",
        str(summary_path),
        *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert summary_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(summary_path.read_text())


def test_fifty_users_really_run_concurrently(
    make_server: Any, tmp_path: Path, marker: dict[str, str]
) -> None:
    """50 users each running ``sleep 2`` again and again for 8 s: a client that
    blocked the process would finish at most 4 jobs; concurrent users finish
    about 50 every 2 s, each job taking about 2 s."""
    server = make_server({"max_connections_per_ip": 60})
    started = time.monotonic()
    proc, summary = locust(
        server,
        tmp_path,
        marker,
        *("--stress-users", "JobUser", "--job-argv", "sleep 2"),
        *("--users", "50", "--spawn-rate", "50", "--run-time", "8s"),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    job = next(row for row in summary["stats"] if row["name"] == "job")
    assert job["failures"] == 0
    # Serialised, 8 s allow at most 4 jobs of 2 s; concurrent users finish
    # about 150 on an idle machine. 40 (ten times the serial bound) leaves
    # room for a machine shared with other builds.
    assert job["requests"] >= 40, job
    assert job["p50_ms"] < 6000, job
    assert elapsed < 40


@pytest.mark.timeout(120)
def test_distributed_master_and_two_workers(tmp_path: Path, marker: dict[str, str]) -> None:
    """``ci/stress --workers 2``: a master and two workers on loopback; both
    workers report requests and the master gates the merged figures."""
    proc, summary = run_ci_stress(
        tmp_path,
        marker,
        {
            "STRESS_DURATION": "8",
            "STRESS_USERS": "4",
            "STRESS_SPAWN_RATE": "4",
            "STRESS_SCENARIOS": "JobUser,StreamUser",
        },
        ["--workers", "2"],
        ["--job-argv", "sleep 0.5", "--seq-lines", "2000"],
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    by_worker = summary["requests_by_worker"]
    assert len(by_worker) == 2 and all(count > 0 for count in by_worker.values()), by_worker
    assert summary["requests"] == sum(by_worker.values())
    assert summary["stream"]["runs"] > 0  # figures shipped from the workers


def test_orphan_is_reported_killed_and_fails_the_run(
    make_server: Callable[..., RunningServer], tmp_path: Path, marker: dict[str, str]
) -> None:
    """A process carrying the run's marker that outlives the run is an orphan:
    named with its command line, killed, and the run exits non-zero."""
    # A server of its own: the shared one carries the memory of earlier tests'
    # floods, and only the orphan gate is under test here.
    server = make_server()
    leaked = subprocess.Popen(["sleep", "60"], env={**os.environ, **marker})
    try:
        proc, summary = locust(
            server,
            tmp_path,
            marker,
            *("--stress-users", "JobUser", "--job-argv", "true", "--orphan-grace-seconds", "1"),
            *("--users", "1", "--spawn-rate", "1", "--run-time", "3s"),
        )
        assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
        assert summary["orphans"] == [{"pid": leaked.pid, "cmdline": "sleep 60"}]
        failed = [gate["name"] for gate in summary["gates"] if not gate["passed"]]
        assert failed == ["orphans"], summary["gates"]
        assert f"ORPHAN pid {leaked.pid}: sleep 60" in proc.stdout
        assert leaked.wait(5) == -9  # killed by the harness
    finally:
        if leaked.poll() is None:
            leaked.kill()
            leaked.wait()


HELLO = {
    "jsonrpc": "2.0",
    "method": "connected",
    "params": {"session_id": "s", "version": "0", "capabilities": ["execute", "status"]},
}


def run_against_fake(
    handler: Callable[[ServerConnection], None], tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Locust for 2 s against a stand-in WebSocket server run by ``handler``
    (no processes, so no RSS bound and no marker)."""
    with serve(handler, "127.0.0.1", 0) as fake:
        thread = threading.Thread(target=fake.serve_forever, daemon=True)
        thread.start()
        port = fake.socket.getsockname()[1]
        summary_path = tmp_path / "summary.json"
        proc = subprocess.run(
            [
                *(str(BIN / "locust"), "-f", str(ROOT / "stress" / "locustfile.py")),
                *("--host", f"ws://127.0.0.1:{port}/ws/mcp", "--headless", "--only-summary"),
                *("--max-rss-mb", "0", "--run-time", "2s", "--summary-json", str(summary_path)),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        fake.shutdown()
    assert summary_path.exists(), (proc.stdout + proc.stderr)[-3000:]
    return proc, json.loads(summary_path.read_text())


def test_users_whose_features_are_missing_are_skipped_not_passed(tmp_path: Path) -> None:
    """Against a server announcing only the core methods, ReconnectUser and
    AgentUser say SKIPPED with the reason and make no scenario request."""

    def core_only(connection: ServerConnection) -> None:
        connection.send(json.dumps(HELLO))
        for _ in connection:
            pass

    proc, summary = run_against_fake(
        core_only,
        tmp_path,
        *("--stress-users", "ReconnectUser,AgentUser", "--project-root", str(tmp_path)),
        *("--users", "2", "--spawn-rate", "2"),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "attach" in summary["skipped"]["ReconnectUser"]
    assert "project.create" in summary["skipped"]["AgentUser"]
    assert {row["name"] for row in summary["stats"]} == {"connect"}
    assert "SKIPPED ReconnectUser" in proc.stdout and "SKIPPED AgentUser" in proc.stdout


@pytest.mark.parametrize(("fail_every", "exit_code"), [(0, 0), (10, 1)])
def test_exit_status_follows_the_failure_ratio_gate(
    tmp_path: Path, fail_every: int, exit_code: int
) -> None:
    """One refused execute in hundreds passes (Locust alone would exit 1 on
    it); one in ten (10 % > 1 %) fails the run."""
    count = itertools.count(1)

    def jobs(connection: ServerConnection) -> None:
        connection.send(json.dumps(HELLO))
        for frame in connection:
            request = json.loads(frame)
            n = next(count)
            if n == 1 or (fail_every and n % fail_every == 0):
                error = {"code": -32001, "message": "limit reached"}
                connection.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}))
                continue
            eid = f"e{n}"
            result = {"status": "started", "execution_id": eid, "pid": 1, "pgid": 1}
            connection.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}))
            done = {"execution_id": eid, "status": "completed", "exit_code": 0, "dropped": 0}
            connection.send(
                json.dumps({"jsonrpc": "2.0", "method": "process.completed", "params": done})
            )

    proc, summary = run_against_fake(
        jobs, tmp_path, "--stress-users", "JobUser", "--users", "1", "--spawn-rate", "1"
    )
    assert proc.returncode == exit_code, (proc.stdout + proc.stderr)[-3000:]
    assert summary["requests"] > 200 and summary["failures"] >= 1
    failed = [gate["name"] for gate in summary["gates"] if not gate["passed"]]
    assert failed == ([] if exit_code == 0 else ["failures"])
