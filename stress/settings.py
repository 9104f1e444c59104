"""The harness's options: Locust command-line flags that also appear in the
web UI form, and :class:`RunSettings`, the typed view the users read.

Every flag is added in :func:`add_arguments` (registered on
``events.init_command_line_parser``); each can also be set from the
environment as ``LOCUST_<FLAG>`` (Locust's own rule). The web UI labels a
field after its ``dest`` (camel-cased, then split before capitals and
digits: ``control_p95_ms`` would read "Control P9 5Ms"), so a dest is plain
words; the plumbing that ``ci/stress`` fills in (server PID, run marker,
project root, summary file) stays out of the form. In distributed mode the
master sends its values to the workers with every spawn message, so the
run marker chosen on the master is the one every worker uses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: Name of the environment variable that marks every command of a run.
DEFAULT_MARKER_NAME = "CCX_STRESS_RUN"
USER_NAMES = (
    "ControlUser",
    "StreamUser",
    "ReconnectUser",
    "AgentUser",
    "JobUser",
    "ClusterUser",
)
DEFAULT_USERS = "ControlUser,StreamUser,ReconnectUser,AgentUser"


def add_arguments(parser: Any) -> None:
    """Register the harness's flags on Locust's parser."""

    def add(flag: str, **kwargs: Any) -> None:
        # Locust's own add_argument (groups lack is_secret); LOCUST_JOB_SECONDS etc.
        env_var = "LOCUST_" + flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, env_var=env_var, **kwargs)

    add("--token", default="", is_secret=True, help="Bearer token of the server, if it has one.")
    add(
        "--stress-users",
        default=DEFAULT_USERS,
        help=f"Comma-separated users to run, of {', '.join(USER_NAMES)} "
        "(the web UI's class picker chooses instead).",
        include_in_web_ui=False,
    )
    add(
        "--job-seconds",
        type=float,
        default=90.0,
        help="ControlUser, ClusterUser: length of the long job.",
    )
    add(
        "--run-before-pause-seconds",
        type=float,
        default=1.0,
        help="ControlUser, ClusterUser: output time before PAUSE (ClusterUser: before attach).",
    )
    add(
        "--pause-hold-seconds",
        type=float,
        default=2.0,
        help="ControlUser, ClusterUser: how long a paused job must stay silent.",
    )
    add(
        "--stream-mode",
        default="seq",
        choices=["seq", "flood"],
        help="StreamUser: 'seq' (seq 1 N) or 'flood' (yes | pv -qL RATE).",
    )
    add("--seq-lines", type=int, default=20000, help="StreamUser: lines of one seq run.")
    add("--flood-rate", type=int, default=50000, help="StreamUser: flood bytes per second (pv -L).")
    add("--flood-seconds", type=float, default=10.0, help="StreamUser: length of one flood.")
    add(
        "--reconnect-lines",
        type=int,
        default=60,
        help="ReconnectUser: numbered lines of the job (one per 50 ms).",
    )
    add(
        "--project-root",
        default="",
        help="AgentUser: directory (inside the server's project roots) for projects.",
        include_in_web_ui=False,
    )
    add("--agent-prompt", default="stress test: say hello", help="AgentUser: the prompt.")
    add("--job-argv", default="sleep 2", help="JobUser: command run to completion each iteration.")
    add("--max-fail-ratio", type=float, default=0.01, help="Gate: failed/total requests allowed.")
    add(
        "--control-p95-ms",
        dest="control_latency_gate_ms",
        type=float,
        default=2000.0,
        help="Gate: the p95 of control must stay below this many milliseconds.",
    )
    add(
        "--max-rss-mb",
        dest="server_memory_gate_mb",
        type=float,
        default=100.0,
        help="Gate: the server's peak RSS must stay below this many MB; 0: no gate.",
    )
    add(
        "--server-pid",
        default="0",
        help="PID of the server (for RSS from /proc), comma-separated in the order of the "
        "hosts; 0: RSS from /metrics or /health.",
        include_in_web_ui=False,
    )
    add(
        "--rss-interval-seconds",
        dest="memory_sample_seconds",
        type=float,
        default=0.5,
        help="How often the server's RSS is sampled.",
    )
    add(
        "--run-marker",
        default="",
        help="NAME=VALUE put in the environment of every command; empty: a fresh one per run.",
        include_in_web_ui=False,
    )
    add(
        "--orphan-grace-seconds",
        type=float,
        default=8.0,
        help="At the end, how long marked processes may take to exit before they are orphans.",
    )
    add(
        "--rpc-timeout-seconds",
        dest="response_timeout_seconds",
        type=float,
        default=30.0,
        help="Longest wait for one response.",
    )
    add(
        "--summary-json",
        default="",
        help="Also write the summary (gates, figures) to this file.",
        include_in_web_ui=False,
    )


def new_marker() -> str:
    return f"{DEFAULT_MARKER_NAME}={uuid.uuid4().hex}"


def ws_url(host: str) -> str:
    """The WebSocket URL for Locust's ``--host`` (``ws://``, ``http://`` or bare)."""
    if "://" not in host:
        host = f"ws://{host}"
    parts = urlsplit(host)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/ws/mcp"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def hosts(host: str | None) -> tuple[str, ...]:
    """The WebSocket URLs of Locust's ``--host``: one server, or several
    separated by commas (the nodes of a cluster), in order."""
    urls = tuple(ws_url(part.strip()) for part in (host or "").split(",") if part.strip())
    if not urls:
        raise ValueError("no --host: give the server, e.g. ws://127.0.0.1:8003/ws/mcp")
    return urls


def server_pids(text: str) -> tuple[int, ...]:
    """``--server-pid``: ``0``, one PID, or several separated by commas."""
    try:
        pids = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--server-pid: {text!r} is not PIDs separated by commas") from None
    if any(pid < 0 for pid in pids):
        raise ValueError(f"--server-pid: {text!r} has a negative PID")
    return pids or (0,)


def http_url(host: str, path: str) -> str:
    """The HTTP URL of ``path`` on the same server as ``host``."""
    parts = urlsplit(ws_url(host))
    scheme = {"ws": "http", "wss": "https"}[parts.scheme]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class RunSettings:
    """The parsed flags, typed, as the users and the plugin read them."""

    token: str | None
    users: tuple[str, ...]
    job_s: float
    run_before_pause_s: float
    pause_hold_s: float
    stream_mode: str
    seq_lines: int
    flood_rate: int
    flood_s: float
    reconnect_lines: int
    project_root: str
    agent_prompt: str
    job_argv: str
    max_fail_ratio: float
    control_p95_ms: float
    max_rss_mb: float
    #: One per host, in the order of ``--host``; 0 where it is not known.
    server_pids: tuple[int, ...]
    rss_interval_s: float
    marker: str
    orphan_grace_s: float
    rpc_timeout_s: float
    summary_json: str
    cleanup_timeout_s: float = 15.0

    @classmethod
    def from_options(cls, options: Any) -> RunSettings:
        users = tuple(u.strip() for u in str(options.stress_users).split(",") if u.strip())
        unknown = sorted(set(users) - set(USER_NAMES))
        if unknown:
            raise ValueError(
                f"--stress-users: unknown {', '.join(unknown)}; known: {', '.join(USER_NAMES)}"
            )
        marker = str(options.run_marker or "")
        if marker and "=" not in marker.strip("="):
            raise ValueError(f"--run-marker must be NAME=VALUE, not {marker!r}")
        return cls(
            token=options.token or None,
            users=users,
            job_s=float(options.job_seconds),
            run_before_pause_s=float(options.run_before_pause_seconds),
            pause_hold_s=float(options.pause_hold_seconds),
            stream_mode=str(options.stream_mode),
            seq_lines=int(options.seq_lines),
            flood_rate=int(options.flood_rate),
            flood_s=float(options.flood_seconds),
            reconnect_lines=int(options.reconnect_lines),
            project_root=str(options.project_root or ""),
            agent_prompt=str(options.agent_prompt),
            job_argv=str(options.job_argv),
            max_fail_ratio=float(options.max_fail_ratio),
            control_p95_ms=float(options.control_latency_gate_ms),
            max_rss_mb=float(options.server_memory_gate_mb),
            server_pids=server_pids(options.server_pid),
            rss_interval_s=float(options.memory_sample_seconds),
            marker=marker,
            orphan_grace_s=float(options.orphan_grace_seconds),
            rpc_timeout_s=float(options.response_timeout_seconds),
            summary_json=str(options.summary_json or ""),
        )

    @classmethod
    def from_environment(cls, environment: Any) -> RunSettings:
        return cls.from_options(environment.parsed_options)

    def marker_env(self) -> dict[str, str]:
        """The ``env`` entry that marks a command as this run's."""
        name, _, value = self.marker.partition("=")
        return {name: value} if name else {}

    def ws_url(self, host: str | None, index: int = 0) -> str:
        """The URL of host number ``index`` (modulo their count) of ``--host``."""
        urls = hosts(host)
        return urls[index % len(urls)]

    def server_pid(self, index: int) -> int:
        """The PID given for host number ``index``; 0 when none was."""
        return self.server_pids[index] if index < len(self.server_pids) else 0
