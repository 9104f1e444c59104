"""Numbers at the edges never cost a connection.

Every integer parameter is bounded (-32602 beyond), a number ``id`` comes back
exactly as written, and a reply that cannot be encoded becomes an error reply.
The property test aims extreme numbers and strings at every field of every
method, with ids that exist (an execution, a project) so that the handlers
run all the way to the store, and asserts that each request gets an answer
that is not -32603 and that the connection lives.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from service.errors import INTERNAL_ERROR, INVALID_PARAMS
from service.protocol import encode_reply, parse_frame, result_response
from service.server.methods import build_router
from tests.utils import RunningServer, start_server

EXAMPLES = int(os.environ.get("CCX_NUMBERS_EXAMPLES", "300"))


# --- ids, in process -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "123456789012345678901234567890",
        "-123456789012345678901234567890",
        "1.10",
        "-0",
        "0",
        "1e2",
        "1E+2",
        "0.1",
        "18446744073709551616",
        "9007199254740993",
        "-9223372036854775809",
        "3.141592653589793238462643383279",
    ],
)
def test_number_ids_come_back_as_written(raw: str) -> None:
    frame = f'{{"jsonrpc": "2.0", "id": {raw}, "method": "status"}}'
    (request,) = parse_frame(frame).items
    assert not isinstance(request, dict)
    text = encode_reply(result_response(request.id, {}))
    assert re.search(rf'"id":{re.escape(raw)}[,}}]', text), text
    batch = parse_frame(f"[{frame}, {frame}]")
    replies = [result_response(r.id, {}) for r in batch.items if not isinstance(r, dict)]
    assert encode_reply(replies).count(f'"id":{raw}') == 2


def test_a_reply_that_cannot_be_encoded_becomes_an_error_reply() -> None:
    bad = result_response(7, {"n": 2**70})
    reply = orjson.loads(encode_reply(bad))
    assert reply["id"] == 7 and reply["error"]["code"] == INTERNAL_ERROR
    good = result_response(8, {"n": 1})
    replies = orjson.loads(encode_reply([bad, good]))
    assert replies[0]["error"]["code"] == INTERNAL_ERROR and replies[1]["result"] == {"n": 1}


# --- against a real server -------------------------------------------------------------


@dataclass
class Target:
    server: RunningServer
    ws: ClientConnection
    execution_id: str
    project_id: str
    counter: int = 0

    def call(self, method: str, params: Any, request_id: Any = None) -> dict[str, Any]:
        self.counter += 1
        rid = request_id if request_id is not None else self.counter
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        return self.wait_for(rid)

    def wait_for(self, request_id: Any) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv(timeout=15))
            if isinstance(message, dict) and message.get("id") == request_id:
                return message


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("numbers")
    (root / "proj").mkdir()
    running = start_server(
        root,
        {
            "allowed_commands": ["echo"],
            "rate_limit_per_s": 100000,
            "rate_limit_burst": 100000,
            "project_roots": [str(root)],
            "claude_bin": "echo",
            "detach_grace_s": 0.2,
            "log_level": "INFO",
        },
    )
    with connect(running.url, open_timeout=10, max_size=None) as ws:
        ws.recv(timeout=10)
        state = Target(running, ws, "", "")
        started = state.call("execute", {"argv": ["echo", "hello"]})
        state.execution_id = started["result"]["execution_id"]
        project = state.call("project.create", {"name": "p", "path": str(root / "proj")})
        state.project_id = project["result"]["project_id"]
        yield state
    assert running.proc.poll() is None, "the server crashed"
    running.stop()
    errors = [e for e in running.logs if e.get("level") == "ERROR"]
    assert not [e for e in errors if "OverflowError" in json.dumps(e)], errors


def test_the_reported_cases(target: Target) -> None:
    for method, params in [
        ("attach", {"execution_id": target.execution_id, "since_seq": "99999999999999999999"}),
        ("attach", {"execution_id": target.execution_id, "since_seq": 2**63}),
        ("transcript.get", {"execution_id": target.execution_id, "since_seq": 2**63}),
        ("executions.list", {"cursor": "9" * 20}),
        ("messages.get", {"project_id": target.project_id, "cursor": "9" * 20}),
    ]:
        reply = target.call(method, params)
        assert reply.get("error", {}).get("code") == INVALID_PARAMS, (method, reply)
    assert "result" in target.call("status", {})


def test_number_ids_over_the_wire(target: Target) -> None:
    for raw in ("123456789012345678901234567890", "1.10", "-0", "1e2"):
        target.ws.send(f'{{"jsonrpc": "2.0", "id": {raw}, "method": "status"}}')
        while True:
            text = target.ws.recv(timeout=10)
            assert isinstance(text, str)
            if '"id":' in text and '"result"' in text:
                break
        assert f'"id":{raw},' in text, (raw, text[:100])


EXTREMES = st.sampled_from(
    [
        2**63,
        2**63 - 1,
        -(2**63) - 1,
        2**64,
        10**30,
        -(10**30),
        2**53,
        2**53 - 1,
        -1,
        0,
        1e308,
        -1e308,
        5e-324,
        "99999999999999999999",
        "-99999999999999999999",
        "1e400",
        "NaN",
        "",
        "x" * 5000,
        "\u0000",
        "0" * 40,
    ]
)
METHODS = {name: list(m.params_model.model_fields) for name, m in build_router()._methods.items()}
ID_FIELDS = {"execution_id", "project_id"}


@given(data=st.data())
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_extreme_values_in_every_field(target: Target, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(sorted(METHODS)))
    fields = METHODS[method]
    params: dict[str, Any] = {}
    for name in fields:
        if name in ID_FIELDS:
            params[name] = target.execution_id if name == "execution_id" else target.project_id
    if fields:
        for name in data.draw(st.lists(st.sampled_from(fields), min_size=1, unique=True)):
            params[name] = data.draw(EXTREMES)
    reply = target.call(method, params)
    assert ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        assert reply["error"]["code"] != INTERNAL_ERROR, (method, params, reply)
    alive = target.call("status", {})
    assert "result" in alive, alive


def test_store_reads_past_sqlite_range_are_refused(tmp_path: Path) -> None:
    """The catch-all behind the models: any integer out of range in validated
    params is -32602, whatever the method."""
    from pydantic import BaseModel

    from service.dispatch import check_integers
    from service.errors import InvalidParams

    class Free(BaseModel):
        n: int
        nested: dict[str, list[int]] = {}

    check_integers(Free(n=2**53 - 1, nested={"a": [-(2**53) + 1]}))
    for bad in (Free(n=2**53), Free(n=0, nested={"a": [1, -(2**63)]})):
        with pytest.raises(InvalidParams, match="out of range"):
            check_integers(bad)
