"""``deploy/haproxy/haproxy.cfg`` run for real: the Debian ``haproxy`` binary
with the very file the compose ``cluster`` profile mounts, in front of two
real nodes on loopback (each with the token, so the health check must send
it). WebSocket connections spread over both nodes with no stickiness; a node
that stops is taken out of rotation by the ``/health`` check and new
connections all reach the other one.

Skipped when ``haproxy`` is not installed (``bash ci/install`` installs it,
so CI runs it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from stress import proxy as haproxy
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
