"""Limits that hold under abuse, the allow-list, and the audit trail, against
one real server configured tight."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets

from service.client import ExecutorClient
from service.errors import LIMIT_REACHED, NOT_ALLOWED, RATE_LIMITED, LimitReached, NotAllowed
from tests.utils import MARKER_NAME, RunningServer, marked_pids, runner, start_server

run = runner(30)

SECRET_VALUE = "do-not-log-this-value"
LIMITS = {
    "max_connections_per_ip": 3,
    "max_executions_per_connection": 2,
    "rate_limit_per_s": 20,
    "rate_limit_burst": 10,
    "max_frame_bytes": 4096,
    "handshake_timeout_s": 0.5,
    "ws_ping_interval_s": 0.5,
    "ws_ping_timeout_s": 1.0,
    "detach_grace_s": 0.2,
    "allowed_commands": ["echo", "sleep"],
}


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("tight"), LIMITS)
    yield running
    running.stop()


# --- raw WebSocket, for peers that misbehave ------------------------------------


def raw_handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return sock


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading and dropping data), or None."""
    started = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - started < timeout:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


# --- connections ------------------------------------------------------------------


def test_per_ip_connection_limit_refuses_with_32001_then_1013(tight: RunningServer) -> None:
    async def main() -> None:
        clients = [ExecutorClient(tight.url) for _ in range(3)]
        for client in clients:
            await client.connect()
        try:
            async with websockets.connect(tight.url) as ws:
                refusal = orjson.loads(await ws.recv())
                assert refusal["error"]["code"] == LIMIT_REACHED
                assert "127.0.0.1" in refusal["error"]["message"]
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1013
        finally:
            for client in clients:
                await client.close()
        # A place freed up: the next client gets in.
        await asyncio.sleep(0.2)
        async with ExecutorClient(tight.url) as client:
            assert (await client.call("status")) == {"executions": []}

    run(main())


def test_executions_per_connection_limit(tight: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(tight.url) as client:
            runs = [await client.execute(argv=["sleep", "30"], env=marker) for _ in range(2)]
            with pytest.raises(LimitReached):
                await client.execute(argv=["sleep", "30"], env=marker)
            for execution in runs:
                await execution.cancel()
                await execution.wait(10)

    run(main())


def test_rate_limit_answers_32006_and_recovers(tight: RunningServer) -> None:
    async def main() -> None:
        async with websockets.connect(tight.url) as ws:
            await ws.recv()  # connected
            batch = [{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(30)]
            await ws.send(orjson.dumps(batch).decode())
            message = orjson.loads(await ws.recv())
            codes = [r["error"]["code"] if "error" in r else 0 for r in message]
            assert sorted(r["id"] for r in message) == list(range(30))
            assert 10 <= codes.count(0) <= 16, codes  # the burst, plus refill while it ran
            assert codes.count(RATE_LIMITED) == 30 - codes.count(0)
            await asyncio.sleep(0.3)
            await ws.send('{"jsonrpc": "2.0", "id": "after", "method": "status"}')
            assert orjson.loads(await ws.recv())["result"] == {"executions": []}

    run(main())


def test_frame_above_the_limit_closes_with_1009(tight: RunningServer) -> None:
    async def main() -> None:
        async with websockets.connect(tight.url) as ws:
            await ws.recv()  # connected
            within = orjson.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "status", "params": {}}
            ).decode()
            await ws.send(within + " " * (4000 - len(within)))
            assert orjson.loads(await ws.recv())["id"] == 1
            await ws.send('{"jsonrpc": "2.0", "id": 2, "method": "status"}' + " " * 5000)
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1009

    run(main())


def test_handshake_timeout_closes_silent_and_trickling_peers(tight: RunningServer) -> None:
    silent = socket.create_connection(("127.0.0.1", tight.port), timeout=5)
    trickling = socket.create_connection(("127.0.0.1", tight.port), timeout=5)
    try:
        trickling.sendall(b"GET /ws/mcp HTTP/1.1\r\n")
        started = time.monotonic()
        for i in range(4):
            time.sleep(0.15)
            try:
                trickling.sendall(f"X-Slow-{i}: 1\r\n".encode())
            except OSError:
                break
        elapsed = closed_within(silent, 3)
        assert elapsed is not None and time.monotonic() - started < 3
        assert closed_within(trickling, 3) is not None
    finally:
        silent.close()
        trickling.close()
    # A prompt client is not affected.
    run(ExecutorClient(tight.url).connect())
    tight.wait_for_log(lambda e: e.get("message") == "handshake timeout: closing the connection")


def test_dead_peer_is_noticed_by_ping_and_its_execution_ends(
    tight: RunningServer, marker: dict[str, str]
) -> None:
    sock = raw_handshake(tight.port)
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "execute",
        "params": {"argv": ["sleep", "30"], "env": marker},
    }
    sock.sendall(masked_text_frame(orjson.dumps(request)))
    try:
        value = marker[MARKER_NAME]
        deadline = time.monotonic() + 5
        while not marked_pids(value) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marked_pids(value), "the execution started"
        # From now on the peer neither reads nor answers pings, like a crashed
        # browser tab behind a half-open TCP connection.
        deadline = time.monotonic() + 8
        while marked_pids(value) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not marked_pids(value), "execution outlived its dead peer"
    finally:
        sock.close()


# --- what may run, and the audit trail ----------------------------------------------


def test_allow_list_and_audit_lines(
    tight: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    lookalike = tmp_path / "echo"
    lookalike.symlink_to("/bin/cat")
    env = {**marker, "SECRET_SETTING": SECRET_VALUE}

    async def main() -> None:
        async with ExecutorClient(tight.url) as client:
            result = await client.run(argv=["echo", "allowed"], env=env)
            assert result.stdout == "allowed\n"
            refusals = [
                {"argv": ["cat", "/etc/hostname"]},
                {"argv": [str(lookalike)]},
                {"command": "echo hi", "shell": True},
                {"argv": ["echo", "x"], "env": {"LD_PRELOAD": "/tmp/evil.so"}},
            ]
            for params in refusals:
                with pytest.raises(NotAllowed) as caught:
                    await client.execute(**{"env": env, **params})
                assert caught.value.code == NOT_ALLOWED
            with pytest.raises(NotAllowed) as caught:
                await client.execute(argv=["cat"], env=env)
            assert "cat" in caught.value.message and caught.value.data["command"] == "cat"

    run(main())
    audit = tight.wait_for_log(
        lambda e: (
            e.get("logger") == "service.server.methods.core"
            and e.get("decision") == "refused"
            and e.get("argv") == ["cat"]
        )
    )
    assert audit["peer"].startswith("127.0.0.1:")
    lines = [e for e in tight.logs if e.get("logger") == "service.server.methods.core"]
    decisions = [e["decision"] for e in lines if "decision" in e]
    assert "started" in decisions and decisions.count("refused") >= 5
    for entry in lines:
        assert SECRET_VALUE not in orjson.dumps(entry).decode()
        if "decision" in entry:
            assert entry["connection_id"] and entry["peer"] and "argv" in entry
