"""Refused handshakes are decisions, logged once as an audit line with the
reason at WARNING, never as ERROR (an unauthenticated peer could otherwise
fill the log with errors at will)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.utils import RunningServer

TOKEN = "refusal-test-token"


def test_each_refusal_is_one_warning_line_and_no_error(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server({"token": TOKEN, "log_level": "INFO"})
    cases = [
        (None, None, 401, "missing or invalid token"),
        ({"Authorization": "Bearer wrong"}, None, 401, "missing or invalid token"),
        ({"Authorization": f"Bearer {TOKEN}"}, "http://evil.example", 403, "origin not allowed"),
    ]
    for headers, origin, status, _ in cases * 3:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url, additional_headers=headers, origin=origin, open_timeout=10)  # type: ignore[arg-type]
        assert refused.value.response.status_code == status
    with connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert '"connected"' in str(ws.recv(timeout=10))
    time.sleep(0.5)  # the last lines reach the log
    refusals = [e for e in server.logs if e.get("decision") == "refused" and "status" in e]
    assert len(refusals) == len(cases) * 3, refusals
    for entry, (_, _, status, reason) in zip(refusals, cases * 3, strict=True):
        assert entry["level"] == "WARNING" and entry["status"] == status
        assert entry["reason"] == reason
    errors = [e for e in server.logs if e.get("level") in ("ERROR", "CRITICAL")]
    assert errors == [], errors
