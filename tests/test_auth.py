"""Who may connect: the token (header or query), the Origin and Host checks,
and the token never showing up in a log line or a child's environment."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from service.client import ExecutorClient
from service.hosts import is_loopback_host
from service.server.auth import AccessPolicy, TokenRedactor
from service.settings import Settings
from tests.utils import MARKER_NAME, RunningServer, runner, start_server

run = runner(30)

TOKEN = "s3cret-T0ken-for-tests"
ALLOWED_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a token in its environment, one allowed origin, and a
    pass_env that (wrongly) lets every CC_EXECUTOR_* variable through."""
    running = start_server(
        tmp_path_factory.mktemp("guarded"),
        {
            "token": TOKEN,
            "allowed_origins": [ALLOWED_ORIGIN],
            "pass_env": ["PATH", "CC_EXECUTOR_*", MARKER_NAME],
        },
    )
    yield running
    running.stop()


def http_get(server: RunningServer, path: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        return connection.getresponse().status
    finally:
        connection.close()


async def handshake_status(url: str, **kwargs: Any) -> int:
    """101 when the upgrade is accepted, else the HTTP status of the refusal."""
    try:
        async with websockets.connect(url, open_timeout=5, **kwargs):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_token_is_required_before_the_upgrade(guarded: RunningServer) -> None:
    async def main() -> None:
        url = guarded.url
        assert await handshake_status(url) == 401
        assert await handshake_status(url + "?token=wrong") == 401
        bad = {"Authorization": "Bearer wrong"}
        assert await handshake_status(url, additional_headers=bad) == 401
        basic = {"Authorization": f"Basic {TOKEN}"}
        assert await handshake_status(url, additional_headers=basic) == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert await handshake_status(url, additional_headers=good) == 101
        assert await handshake_status(f"{url}?token={TOKEN}") == 101

    run(main())


def test_token_via_header_and_via_query_both_run_commands(
    guarded: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(guarded.url, token=TOKEN) as client:
            result = await client.run(argv=["echo", "header"], env=marker)
            assert result.stdout == "header\n"
        async with ExecutorClient(f"{guarded.url}?token={TOKEN}") as client:
            result = await client.run(argv=["echo", "query"], env=marker)
            assert result.stdout == "query\n"

    run(main())


def test_http_endpoints_need_the_token_but_healthz(guarded: RunningServer) -> None:
    assert http_get(guarded, "/healthz") == 200
    assert http_get(guarded, "/health") == 401
    assert http_get(guarded, "/health", {"Authorization": f"Bearer {TOKEN}"}) == 200
    assert http_get(guarded, f"/health?token={TOKEN}") == 200


def test_token_never_reaches_a_child_even_through_pass_env(
    guarded: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> str:
        async with ExecutorClient(guarded.url, token=TOKEN) as client:
            result = await client.run(argv=["env"], env=marker)
            return result.stdout

    names = {line.partition("=")[0] for line in run(main()).splitlines()}
    assert "CC_EXECUTOR_TOKEN" not in names
    assert not any(TOKEN in line for line in run(main()).splitlines())
    # Only the execution marker of the CC_EXECUTOR_ family reaches a child.
    assert {n for n in names if n.startswith("CC_EXECUTOR_")} == {"CC_EXECUTOR_EXECUTION_ID"}
    assert MARKER_NAME in names


def test_token_never_logged(guarded: RunningServer) -> None:
    async def main() -> None:
        await handshake_status(f"{guarded.url}?token=near-miss-{TOKEN}")
        async with ExecutorClient(f"{guarded.url}?token={TOKEN}") as client:
            await client.call("status")
        async with ExecutorClient(guarded.url, token=TOKEN) as client:
            await client.call("status")

    run(main())
    guarded.wait_for_log(lambda e: "[redacted]" in e.get("message", ""))
    text = "\n".join(guarded.raw)
    assert TOKEN not in text
    assert "near-miss" not in text


def test_foreign_origin_is_refused_own_and_listed_ones_pass(guarded: RunningServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    port = guarded.port

    async def status(origin: str | None, host: str | None = None) -> int:
        headers = dict(auth)
        if host is not None:
            headers["Host"] = host
        return await handshake_status(guarded.url, origin=origin, additional_headers=headers)

    async def main() -> None:
        assert await status(None) == 101  # not a browser
        assert await status(f"http://127.0.0.1:{port}") == 101
        assert await status(f"http://localhost:{port}") == 101
        assert await status(ALLOWED_ORIGIN) == 101
        assert await status("https://evil.example") == 403
        assert await status(f"http://localhost:{port + 1}") == 403  # another local app
        assert await status("null") == 403
        # DNS rebinding: the page's own name resolves to 127.0.0.1.
        rebound = f"evil.example:{port}"
        assert await status(f"http://{rebound}", host=rebound) == 403

    run(main())
    # A rebound page's plain GET carries no Origin: the Host check refuses it.
    assert http_get(guarded, "/health", {**auth, "Host": f"evil.example:{port}"}) == 403
    assert http_get(guarded, "/health", {**auth, "Host": f"localhost:{port}"}) == 200
    # Orchestrators probe /healthz by pod IP: it answers any Host (docs/security.md).
    assert http_get(guarded, "/healthz", {"Host": f"10.1.2.3:{port}"}) == 200


def test_refusal_is_an_http_response_with_a_reason(guarded: RunningServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=5)
    try:
        connection.request(
            "GET",
            "/ws/mcp",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        response = connection.getresponse()
        assert response.status == 401
        assert response.getheader("www-authenticate") == "Bearer"
        assert orjson.loads(response.read()) == {"error": "missing or invalid token"}
    finally:
        connection.close()


# --- pure parts ----------------------------------------------------------------


def scope(origin: str | None = None, host: str | None = None, port: int = 8003) -> dict[str, Any]:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if host is not None:
        headers.append((b"host", host.encode()))
    return {"headers": headers, "server": ("127.0.0.1", port)}


def test_policy_on_a_wildcard_bind_checks_origin_not_host() -> None:
    policy = AccessPolicy([], "0.0.0.0")
    assert policy.host_ok(scope(host="executor.internal:8003"))
    assert not policy.origin_ok(scope(origin="http://executor.internal:8003"))
    assert policy.origin_ok(scope(origin="http://127.0.0.1:8003"))
    named = AccessPolicy([], "10.1.2.3")
    assert named.origin_ok(scope(origin="http://10.1.2.3:8003"))
    assert not named.origin_ok(scope(origin="http://10.1.2.3:9999"))
    assert AccessPolicy(["*"], "127.0.0.1").origin_ok(scope(origin="https://any.example"))
    assert not policy.origin_ok(scope(origin="http://[::1"))  # malformed


def test_loopback_names() -> None:
    for name in ("localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "app.localhost"):
        assert is_loopback_host(name), name
    for name in ("0.0.0.0", "10.0.0.1", "evil.example", "localhost.evil.example", "", None):
        assert not is_loopback_host(name), name
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "::1", "localhost"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "::", "example"))


def test_redactor_blanks_query_header_and_value() -> None:
    redactor = TokenRedactor("abc123")
    cases = [
        ('%s - "WebSocket %s" [accepted]', ("1.2.3.4:5", "/ws/mcp?token=abc123&x=1")),
        ("< authorization: Bearer %s", ("wrong-one",)),
        ("value %s inside", ("xxabc123xx",)),
    ]
    for msg, args in cases:
        record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, None)
        assert redactor.filter(record)
        text = record.getMessage()
        assert "abc123" not in text and "wrong-one" not in text, text
        assert "[redacted]" in text


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file\nignored\n")
    assert Settings(token_file=path).resolved_token() == "from-file"
    assert Settings(token="direct", token_file=path).resolved_token() == "direct"
    path.write_text("\n")
    assert Settings(token_file=path).resolved_token() is None
