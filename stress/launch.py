"""``ci/stress``: start a server, run Locust against it, gate, stop the server.

    python -m stress.launch [--ui | --t02 | --t03] [--cluster] [--workers N] [-- LOCUST ARGS]

The server is the real ``cc-executor serve`` on a free loopback port (port 0;
the port is read from its JSON "listening" log line), with a fresh data
directory and a project root for AgentUser, ``fake-claude`` as its Claude
binary. Locust runs headless (or with its web UI on 127.0.0.1:8089 for
``--ui``), optionally as a master with N local workers, and writes HTML and CSV
reports under ``stress/reports/`` (``STRESS_REPORTS``). After Locust and the
server have stopped, any process still carrying the run's marker is an orphan:
reported, killed, and the exit status is non-zero.

``--cluster`` starts a throwaway PostgreSQL and two nodes sharing it
(:mod:`stress.cluster`) instead of one server; Locust gets both in ``--host``
(its users spread over them) and ClusterUser joins the users.

Environment (checked first by :mod:`stress.variables`; a bad value is one
line and exit 2): ``STRESS_DURATION`` (``40``, ``40s``, ``2m``, ``1h30m``;
default 60 s), ``STRESS_USERS`` (default 8), ``STRESS_SPAWN_RATE`` (default
4), ``STRESS_SCENARIOS`` (user classes, default all but JobUser),
``STRESS_WORKERS``, ``STRESS_REPORTS``. ``CC_EXECUTOR_*`` variables reach the
server unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.client.launch import ServerStartError, run_server
from service.client.postgres import PostgresUnavailable
from stress import orphans, variables
from stress.cluster import ClusterNotReady, LocalCluster
from stress.settings import new_marker

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "stress" / "locustfile.py"
BIN = Path(sys.executable).parent


@dataclass
class Scenario:
    """What one mode runs: Locust flags and a report name."""

    name: str
    users: int
    spawn_rate: float
    duration_s: float
    args: list[str] = field(default_factory=list)


def scenario(mode: str, given: variables.Variables, cluster: bool = False) -> Scenario:
    duration = given.duration_s or 60
    users = given.users or 8
    rate = given.spawn_rate or 4
    scenarios = given.scenarios
    if cluster and "ClusterUser" not in scenarios.split(","):
        scenarios += ",ClusterUser"
    if mode == "t03":
        # The seed's check: >= 3 sessions PAUSE, RESUME and CANCEL a 90-second job.
        return Scenario(
            "t03",
            max(3, given.users or 3),
            3,
            given.duration_s or 90,
            ["--stress-users", "ControlUser", "--job-seconds", "90"],
        )
    if mode == "t02":
        # The seed's check: `yes | pv -qL 50000` for 60 s, server under 100 MB.
        return Scenario(
            "t02",
            given.users or 1,
            1,
            given.duration_s or 70,
            [
                "--stress-users",
                "StreamUser",
                "--stream-mode",
                "flood",
                "--flood-rate",
                "50000",
                "--flood-seconds",
                "60",
            ],
        )
    return Scenario(mode, users, rate, duration, ["--stress-users", scenarios])


@dataclass
class Servers:
    """The servers of a run (one, or the nodes of a cluster) and how to stop them."""

    urls: list[str]
    pids: list[int]
    logs: list[Path]
    stop: Callable[[], list[int]]


def server_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CC_EXECUTOR_DATA_DIR"] = str(work / "data")
    env.setdefault("CC_EXECUTOR_PROJECT_ROOTS", json.dumps([str(work / "projects")]))
    env["CC_EXECUTOR_LOG_FORMAT"] = "json"
    env.setdefault("CC_EXECUTOR_LOG_LEVEL", "INFO")
    fake = shutil.which("fake-claude", path=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    if fake and "CC_EXECUTOR_CLAUDE_BIN" not in env:
        env["CC_EXECUTOR_CLAUDE_BIN"] = fake
    return env


def start_server(work: Path, reports: Path, name: str) -> Servers:
    """``cc-executor serve --port 0``; wait for its "listening" line."""
    log_path = reports / f"{name}-server.log"
    log_path.unlink(missing_ok=True)  # one run's log, not appended to an older one
    started = run_server(
        server_env(work),
        args=["--host", "127.0.0.1"],
        cwd=work,
        log_path=log_path,
        timeout_s=30,
        start_new_session=True,  # stopped by the launcher, after Locust, not by Ctrl-C
    )
    url = f"ws://127.0.0.1:{started.port}/ws/mcp"
    return Servers([url], [started.pid], [log_path], lambda: [started.stop(timeout_s=20)])


def start_cluster(work: Path, reports: Path, name: str) -> Servers:
    """A throwaway PostgreSQL and two nodes sharing it (:mod:`stress.cluster`);
    their logs are ``NAME-node-a.log`` and ``NAME-node-b.log``."""
    log_dir = reports / f"{name}-nodes"
    log_dir.mkdir(exist_ok=True)
    for old in log_dir.glob("node-*.log"):
        old.unlink()
    cluster = LocalCluster(work, 2, server_env(work), log_dir=log_dir).open()
    nodes = list(cluster.nodes)

    def stop() -> list[int]:
        cluster.close()
        return [node.server.proc.wait() for node in nodes]

    return Servers(
        [node.ws_url for node in nodes],
        [node.pid for node in nodes],
        [log_dir / f"{node.name}.log" for node in nodes],
        stop,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locust_command(
    mode: str, plan: Scenario, servers: Servers, work: Path, reports: Path, marker: str
) -> list[str]:
    base = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--host",
        ",".join(servers.urls),
        "--server-pid",
        ",".join(str(pid) for pid in servers.pids),
        "--run-marker",
        marker,
        "--project-root",
        str(work / "projects"),
        *plan.args,
    ]
    if mode == "ui":
        return [
            *base,
            *("--web-host", "127.0.0.1", "--web-port", "8089", "--class-picker"),
            # The form's defaults: the same as a headless run's.
            *("--users", str(plan.users), "--spawn-rate", f"{plan.spawn_rate:g}"),
            *("--csv", str(reports / "ui"), "--html", str(reports / "ui.html")),
            *("--summary-json", str(reports / "ui-summary.json")),
        ]
    return [
        *base,
        "--headless",
        "--users",
        str(plan.users),
        "--spawn-rate",
        str(plan.spawn_rate),
        "--run-time",
        f"{int(plan.duration_s)}s",
        "--only-summary",
        "--csv",
        str(reports / plan.name),
        "--html",
        str(reports / f"{plan.name}.html"),
        "--summary-json",
        str(reports / f"{plan.name}-summary.json"),
    ]


class Children:
    """The Locust processes of the run; a signal to the launcher reaches each."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str]) -> subprocess.Popen[bytes]:
        # Own session: a terminal's Ctrl-C reaches the launcher only, which
        # forwards it once (a second SIGINT would cut Locust's gates short).
        proc = subprocess.Popen(command, start_new_session=True)
        self.procs.append(proc)
        return proc

    def forward(self, signum: int, _frame: object = None) -> None:
        """Pass SIGINT/SIGTERM on, as SIGTERM: Locust then stops its users and
        runs its gates. (A SIGINT would reach Locust's gevent hub as a bare
        ``KeyboardInterrupt`` printed on the terminal; SIGTERM is its clean
        shutdown.)"""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def reap(self, timeout_s: float) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_locust(children: Children, command: list[str], workers: int, extra: list[str]) -> int:
    """Run Locust (as master plus ``workers`` local workers when > 0); its status."""
    if workers <= 0:
        return children.start([*command, *extra]).wait()
    port = free_port()
    master = children.start(
        [
            *command,
            *extra,
            *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            *("--expect-workers", str(workers), "--expect-workers-max-wait", "60"),
        ]
    )
    helpers = [
        children.start(
            [
                *(str(BIN / "locust"), "-f", str(LOCUSTFILE), "--worker"),
                *("--master-host", "127.0.0.1", "--master-port", str(port)),
            ]
        )
        for _ in range(workers)
    ]
    code = master.wait()
    children.reap(30)  # workers quit when the master tells them
    bad = [h.returncode for h in helpers if h.returncode != 0]
    if bad:
        print(f"stress: a worker exited with {bad}", file=sys.stderr)
    return code


def given_marker(locust_args: list[str]) -> str | None:
    """The ``--run-marker`` among the Locust arguments, if one was given."""
    for index, arg in enumerate(locust_args):
        if arg.startswith("--run-marker="):
            return arg.split("=", 1)[1]
        if arg == "--run-marker" and index + 1 < len(locust_args):
            return locust_args[index + 1]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/stress", description=__doc__.split("\n\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--ui", action="store_const", dest="mode", const="ui")
    modes.add_argument("--t02", action="store_const", dest="mode", const="t02")
    modes.add_argument("--t03", action="store_const", dest="mode", const="t03")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="two nodes sharing a throwaway PostgreSQL; ClusterUser joins the users",
    )
    parser.add_argument("--workers", type=int, help="local Locust workers (STRESS_WORKERS)")
    parser.add_argument("locust_args", nargs="*", help="after --: passed to Locust")
    args = parser.parse_args(argv)
    try:
        given = variables.read(os.environ)
    except variables.VariableError as exc:
        print(f"ci/stress: {exc}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else given.workers
    mode = args.mode or ("cluster" if args.cluster else "stress")
    plan = scenario(mode, given, args.cluster)
    reports = (given.reports or ROOT / "stress" / "reports").resolve()
    try:
        reports.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"ci/stress: STRESS_REPORTS: cannot create {reports}: {exc.strerror}", file=sys.stderr
        )
        return 2
    marker = given_marker(args.locust_args) or new_marker()
    if os.environ.get("CC_EXECUTOR_TOKEN") and not os.environ.get("LOCUST_TOKEN"):
        # Through the environment, not argv: argv is visible to every local user.
        os.environ["LOCUST_TOKEN"] = os.environ["CC_EXECUTOR_TOKEN"]
    with tempfile.TemporaryDirectory(prefix="ccx-stress-") as tmp:
        work = Path(tmp)
        (work / "projects").mkdir()
        try:
            servers = (start_cluster if args.cluster else start_server)(work, reports, plan.name)
        except (ServerStartError, PostgresUnavailable, ClusterNotReady) as exc:
            print(f"ci/stress: {exc}", file=sys.stderr)
            return 1
        for url, pid in zip(servers.urls, servers.pids, strict=True):
            print(f"stress: server pid {pid} on {url}", flush=True)
        children = Children()
        previous = {
            sig: signal.signal(sig, children.forward) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            command = locust_command(mode, plan, servers, work, reports, marker)
            code = run_locust(children, command, workers, args.locust_args)
        finally:
            children.reap(30)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server_codes = servers.stop()
    left = orphans.reap(marker, 2.0)
    for orphan in left:
        print(f"stress: ORPHAN after server stop: pid {orphan.pid}: {orphan.cmdline}")
    for server_code, log_path in zip(server_codes, servers.logs, strict=True):
        if server_code not in (0, -signal.SIGTERM):
            print(f"stress: server exited with {server_code}; see {log_path}")
    if mode != "ui":
        print(f"stress: reports in {reports}/{plan.name}.html and {plan.name}_*.csv")
    if code == 0 and left:
        code = 1
    print(f"stress: {'PASSED' if code == 0 else 'FAILED'} (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
