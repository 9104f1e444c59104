"""``deploy/haproxy/haproxy.cfg`` run for real: the Debian ``haproxy`` binary
with the very file the compose ``cluster`` profile mounts, in front of two
real nodes on loopback (each with the token, so the health check must send
it). WebSocket connections spread over both nodes with no stickiness; a node
that stops is taken out of rotation by the ``/health`` check and new
connections all reach the other one. In front of two nodes sharing a
throwaway PostgreSQL, a job started through one session is driven through
another that the proxy gave to the other node.

Skipped when ``haproxy`` is not installed (``bash ci/install`` installs it,
so CI runs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from service.process import procfs
from stress import proxy as haproxy
from stress.cluster import LocalCluster
from tests.utils import RunningServer

TOKEN = "proxy-test-token-" + "x" * 32

pytestmark = pytest.mark.skipif(
    haproxy.haproxy_binary() is None, reason="haproxy is not installed (bash ci/install)"
)


def health(node: RunningServer) -> dict[str, Any]:
    request = urllib.request.Request(
        node.http_url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        document: dict[str, Any] = json.load(response)
    return document


@contextmanager
def open_session(url: str) -> Iterator[ClientConnection]:
    """A WebSocket through the proxy, past the ``connected`` notification."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["method"] == "connected", hello
        yield ws


def echo(ws: ClientConnection, request_id: int) -> None:
    """One request answered through the proxy: the tunnel carries both ways."""
    ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "status"}))
    while True:
        message = json.loads(ws.recv(timeout=10))
        if message.get("id") == request_id:
            assert message["result"] == {"executions": []}, message
            return


@pytest.fixture
def cluster(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> Iterator[tuple[list[RunningServer], haproxy.Proxy]]:
    nodes = [make_server({"token": TOKEN}) for _ in haproxy.NODE_NAMES]
    running = haproxy.start_proxy(
        [node.port for node in nodes], tmp_path / "haproxy.log", token=TOKEN
    )
    try:
        yield nodes, running
    finally:
        running.stop()


def test_config_is_valid_for_haproxy() -> None:
    """``haproxy -c`` accepts the file as shipped (ci/lint runs the same)."""
    binary = haproxy.haproxy_binary()
    assert binary is not None
    checked = subprocess.run(
        [binary, "-c", "-f", str(haproxy.CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_connections_spread_over_both_nodes_and_avoid_a_stopped_one(
    cluster: tuple[list[RunningServer], haproxy.Proxy],
) -> None:
    nodes, running = cluster
    # Both pass the health check only if the proxy sends the token (401 otherwise).
    states = haproxy.wait_states(running, {"node-a": "UP", "node-b": "UP"}, 15)
    assert states == {"node-a": "UP", "node-b": "UP"}, running.log_path.read_text()[-2000:]

    with ExitStack() as stack:
        sessions = [stack.enter_context(open_session(running.ws_url)) for _ in range(6)]
        for index, ws in enumerate(sessions):
            echo(ws, index + 1)
        counts = [health(node)["connections"] for node in nodes]
        # leastconn with no stickiness: 3 and 3 (never all six on one node).
        assert counts == [3, 3], counts

    nodes[1].stop(signal.SIGTERM)
    states = haproxy.wait_states(running, {"node-b": "DOWN"}, 15)
    assert states.get("node-b") == "DOWN", states
    assert states.get("node-a") == "UP", states
    with ExitStack() as stack:
        sessions = [stack.enter_context(open_session(running.ws_url)) for _ in range(4)]
        for index, ws in enumerate(sessions):
            echo(ws, index + 1)
        assert health(nodes[0])["connections"] == 4


def call(
    ws: ClientConnection,
    request_id: int,
    method: str,
    params: dict[str, Any],
    seen: list[dict[str, Any]],
) -> Any:
    """Send a request; its result. The notifications read meanwhile go to ``seen``."""
    ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv(timeout=15))
        if message.get("id") == request_id:
            assert "result" in message, message
            return message["result"]
        seen.append(message)


@pytest.mark.pg
def test_through_the_proxy_a_job_is_driven_from_the_other_node(tmp_path: Path) -> None:
    """The compose cluster as it runs: HAProxy in front of two nodes sharing
    PostgreSQL. Two sessions through the proxy land on different nodes
    (leastconn); the job started through the first is attached to, paused
    and cancelled through the second, which is served by the other node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    env.update({"CC_EXECUTOR_TOKEN": TOKEN, "CC_EXECUTOR_KILL_GRACE_S": "2"})
    with LocalCluster(tmp_path / "cluster", 2, env) as cluster:
        running = haproxy.start_proxy(
            [node.port for node in cluster.nodes], tmp_path / "haproxy.log", token=TOKEN
        )
        try:
            states = haproxy.wait_states(running, {"node-a": "UP", "node-b": "UP"}, 15)
            assert states == {"node-a": "UP", "node-b": "UP"}, states
            with open_session(running.ws_url) as first, open_session(running.ws_url) as second:
                counts = {node.name: up_connections(node.http_url) for node in cluster.nodes}
                assert counts == {"node-a": 1, "node-b": 1}, counts
                ticker = (
                    'i=1; while [ "$i" -le 200 ]; do echo "tick $i"; i=$((i+1)); sleep 0.05; done'
                )
                ignored: list[dict[str, Any]] = []
                seen: list[dict[str, Any]] = []
                started = call(first, 1, "execute", {"argv": ["sh", "-c", ticker]}, ignored)
                execution_id, pgid = started["execution_id"], started["pgid"]
                time.sleep(0.5)
                attached = call(second, 1, "attach", {"execution_id": execution_id}, seen)
                assert attached["replay"] is True and attached.get("node") in ("node-a", "node-b")
                paused = call(
                    second, 2, "control", {"type": "PAUSE", "execution_id": execution_id}, seen
                )
                assert paused["status"] == "paused"
                stopped, members = procfs.group_stopped(pgid)
                assert members and stopped, (pgid, members)
                call(second, 3, "control", {"type": "CANCEL", "execution_id": execution_id}, seen)
                seqs, text, completed = [], "", None
                while completed is None:
                    message = seen.pop(0) if seen else json.loads(second.recv(timeout=15))
                    params = message.get("params") or {}
                    if message.get("method") == "process.output":
                        seqs.append(params["seq"])
                        text += params["data"]
                    elif message.get("method") == "process.completed":
                        completed = params
                assert completed["status"] == "cancelled", completed
                assert seqs == list(range(1, len(seqs) + 1)) and seqs, seqs
                # Every tick once, in order; under load one chunk may carry two lines.
                lines = text.split("\n")[:-1]
                assert lines == [f"tick {n}" for n in range(1, len(lines) + 1)], lines
        finally:
            running.stop()


def up_connections(http_url: str) -> int:
    request = urllib.request.Request(
        http_url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.load(response)["connections"])
