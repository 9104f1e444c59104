"""The HAProxy of ``deploy/haproxy/haproxy.cfg``, run for real on loopback.

:func:`start_proxy` runs the Debian ``haproxy`` binary in the foreground
(``-db``) with the very file the compose ``cluster`` profile mounts, its
addresses given through the environment variables the file reads
(``CCX_NODE_A``, ``CCX_NODE_B``, ``CCX_PROXY_BIND``, ...). Tests and
``ci/stress --cluster --proxy`` use it; :func:`server_states` reads the
proxy's own view of its nodes (the stats page as CSV).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy" / "haproxy.cfg"
#: The node names of the config, in order (``server node-a ...``).
NODE_NAMES = ("node-a", "node-b")


class ProxyError(RuntimeError):
    """HAProxy is missing or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def haproxy_binary() -> str | None:
    """The ``haproxy`` binary (Debian puts it in /usr/sbin), or None."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@dataclass
class Proxy:
    """A running HAProxy: where clients connect and where its stats are."""

    proc: subprocess.Popen[bytes]
    port: int
    stats_port: int
    log_path: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mcp"

    def stop(self) -> int:
        """SIGTERM (HAProxy's hard stop) and wait; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def start_proxy(
    nodes: Sequence[int],
    log_path: Path,
    token: str | None = None,
    check_interval: str = "200ms",
    timeout_s: float = 10.0,
) -> Proxy:
    """Run HAProxy on a free loopback port in front of the loopback ``nodes``
    (ports, as many as the config names). Returns once it accepts connections;
    raises :class:`ProxyError` when the binary is missing or it exits first."""
    binary = haproxy_binary()
    if binary is None:
        raise ProxyError("haproxy is not installed (bash ci/install installs it)")
    if len(nodes) != len(NODE_NAMES):
        raise ProxyError(f"the config names {len(NODE_NAMES)} nodes, not {len(nodes)}")
    port, stats_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CCX_PROXY_BIND": f"127.0.0.1:{port}",
        "CCX_STATS_BIND": f"127.0.0.1:{stats_port}",
        "CCX_CHECK_INTER": check_interval,
        "CC_EXECUTOR_TOKEN": token or "",
    }
    for name, node_port in zip(NODE_NAMES, nodes, strict=True):
        env["CCX_" + name.replace("-", "_").upper()] = f"127.0.0.1:{node_port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(CONFIG)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    proxy = Proxy(proc, port, stats_port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProxyError(f"haproxy exited with {proc.returncode}: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proxy
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise ProxyError(f"haproxy did not listen within {timeout_s} s: {log_path.read_text()}")


def server_states(proxy: Proxy) -> dict[str, str]:
    """Each node's status as the proxy sees it (``UP``, ``DOWN``, ...)."""
    url = f"http://127.0.0.1:{proxy.stats_port}/;csv"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode().lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row["pxname"] == "nodes" and row["svname"] in NODE_NAMES
    }


def wait_states(proxy: Proxy, wanted: dict[str, str], timeout_s: float) -> dict[str, str]:
    """Poll :func:`server_states` until every node in ``wanted`` is exactly in
    its state (``UP 1/2``, a node on its way down, is not ``UP``); the last
    states seen."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = server_states(proxy)
        if all(states.get(name) == state for name, state in wanted.items()):
            return states
        time.sleep(0.1)
    return states
