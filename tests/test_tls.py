"""wss:// and https:// with a self-signed certificate made for the test."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from service.client import ExecutorClient
from tests.utils import RunningServer


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, valid for a day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_wss_with_a_self_signed_certificate(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    running = make_server(
        extra_args=["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], scheme="wss"
    )
    assert running.url.startswith("wss://")
    listening = running.wait_for_log(lambda e: e.get("message") == "listening")
    assert listening["tls"] is True
    trusted = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async with ExecutorClient(running.url, ssl=trusted) as client:
            result = await client.run(argv=["echo", "over tls"], env=marker)
            assert result.stdout == "over tls\n" and result.status == "completed"
        # Without trusting the certificate, the client refuses the server...
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.connect(running.url, open_timeout=5)
        # ...and a plain-text client gets no WebSocket from a TLS port.
        plain = running.url.replace("wss://", "ws://")
        with pytest.raises((websockets.InvalidMessage, OSError, EOFError, TimeoutError)):
            await websockets.connect(plain, open_timeout=3)

    asyncio.run(asyncio.wait_for(main(), 30))

    connection = http.client.HTTPSConnection("127.0.0.1", running.port, context=trusted, timeout=5)
    try:
        connection.request("GET", "/healthz")
        response: Any = connection.getresponse()
        assert response.status == 200
    finally:
        connection.close()
