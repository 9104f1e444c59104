"""Bad input, fuzzed: arbitrary params for every registered method and arbitrary
frames at a real server socket.

Every request gets one well-formed JSON-RPC response (a result or an error),
the connection stays usable, the server never crashes, nothing is spawned by
a request that was answered with an error, and no process is left behind.
The server runs with an allow-list of ``true`` only, so a request that does
pass validation runs nothing worse.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from service.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NAMES,
    PARSE_ERROR,
)
from service.process import procfs
from service.server.methods import build_router
from tests.utils import RunningServer, start_server

#: Example counts, sized to the test budget (about 15 s on a shared 2-core box).
PARAMS_EXAMPLES = int(os.environ.get("CCX_FUZZ_PARAMS_EXAMPLES", "400"))
FRAME_EXAMPLES = int(os.environ.get("CCX_FUZZ_FRAME_EXAMPLES", "300"))
MAX_FRAME_BYTES = 64 * 1024
FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SPAWNING = {"execute", "agent.execute"}
ERROR_KEYS = {"code", "message", "data"}


@dataclass
class Fuzz:
    """The fuzzed server, one connection to it, and what was seen."""

    server: RunningServer
    methods: list[str]
    ws: ClientConnection | None = None
    sent: int = 0
    started: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    internal: list[str] = field(default_factory=list)

    def connection(self) -> ClientConnection:
        assert self.ws is not None, "the shared connection was lost"
        return self.ws

    def exchange(self, frame: str | bytes, *, text: bool | None = None) -> list[Any]:
        """Send ``frame`` then a sentinel request; every response before the sentinel's.

        Responses arrive in request order (one receive loop per connection), so
        the sentinel's response closes the list.
        """
        ws = self.connection()
        self.sent += 1
        sentinel = f"sentinel-{self.sent}"
        ws.send(frame, text=text)
        ws.send(json.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "status"}))
        responses: list[Any] = []
        while True:
            message = json.loads(ws.recv(timeout=10))
            if isinstance(message, dict) and "method" in message:
                continue  # a notification
            if isinstance(message, dict) and message.get("id") == sentinel:
                assert "result" in message, message
                return responses
            responses.append(message)

    def check_response(self, message: Any, method: str | None = None) -> None:
        assert isinstance(message, dict), message
        assert message.get("jsonrpc") == "2.0", message
        assert "id" in message, message
        assert ("result" in message) != ("error" in message), message
        assert set(message) <= {"jsonrpc", "id", "result", "error"}, message
        if "error" in message:
            error = message["error"]
            assert isinstance(error, dict) and set(error) <= ERROR_KEYS, error
            assert isinstance(error["code"], int) and not isinstance(error["code"], bool)
            assert isinstance(error["message"], str) and error["message"]
            # Every error names its cause (docs/protocol.md, "Error names").
            assert error["data"]["error"] in NAMES, error
            assert NAMES[error["data"]["error"]] == error["code"], error
            self.codes[error["code"]] = self.codes.get(error["code"], 0) + 1
            if error["code"] == INTERNAL_ERROR:
                self.internal.append(f"{method}: {error['message']}")
        elif method in SPAWNING:
            self.started += 1


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    root = tmp_path_factory.mktemp("fuzz")
    running = start_server(
        root,
        {
            "allowed_commands": ["true"],
            "rate_limit_per_s": 100000,
            "rate_limit_burst": 100000,
            "max_frame_bytes": MAX_FRAME_BYTES,
            "project_roots": [str(root)],
            "claude_bin": "true",
            # A fuzzed PAUSE can catch a `true` before it exits: such a paused
            # execution is legitimate, and ends when the connection is gone.
            "detach_grace_s": 0.2,
            "log_level": "INFO",
        },
    )
    with connect(running.url, open_timeout=10, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=10))
        known = set(build_router().names)
        methods = sorted(set(hello["params"]["capabilities"]) & known)
        state = Fuzz(running, methods, ws)
        yield state
    assert running.proc.poll() is None, "the server crashed"
    # Started executions ran `true`; nothing may be left of them.
    deadline = time.monotonic() + 10
    while children(running.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: (procfs.read_stat(pid), procfs.cmdline(pid)) for pid in children(running.pid)}
    assert not left, f"processes left behind: {left}"
    started_lines = [
        e
        for e in running.logs
        if e.get("decision") == "started"
        and e.get("logger", "").startswith("service.server.methods")
    ]
    running.stop()
    assert len(started_lines) == state.started, "something was spawned by a refused request"
    print(
        f"\nfuzz: {state.sent} frames, {len(methods)} methods, {state.started} executions "
        f"started, error codes {dict(sorted(state.codes.items()))}"
    )
    assert not state.internal, f"internal errors on bad input: {state.internal[:10]}"


def children(pid: int) -> list[int]:
    return [
        s.pid
        for s in map(procfs.read_stat, procfs.all_pids())
        if s is not None and s.ppid == pid and s.state not in procfs.GONE_STATES
    ]


# --- strategies ----------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["true", "/bin/true", "sleep 1", "PAUSE", "cancel", "", "\x00", "0" * 40])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = (
    st.none()
    | st.integers()
    | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False)
)
FIELDS = {
    name: list(method.params_model.model_fields) for name, method in build_router()._methods.items()
}


counts = st.integers(-10, 2**70)
names = st.text(max_size=40) | st.just("x" * 300)
#: Values of the right type (mostly) for known field names, to get past the
#: first check and into the handlers.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "command": st.sampled_from(["true", "true a b", "sleep 1", "'unterminated", "x\x00y"]),
    "argv": st.lists(
        st.sampled_from(["true", "/bin/true", "sleep", "x", ""]), min_size=1, max_size=3
    ),
    "cwd": st.sampled_from(["/tmp", "/", "relative", "/nonexistent"]),
    "env": st.dictionaries(
        st.sampled_from(["A", "LD_PRELOAD", "PATH", "CC_EXECUTOR_TOKEN", "A=B", "", "B"]),
        st.text(max_size=5),
        max_size=2,
    ),
    "timeout": st.floats(-1, 1e6, allow_nan=False),
    "timeout_s": st.floats(-1, 1e6, allow_nan=False),
    "type": st.sampled_from(["PAUSE", "resume", "Cancel", "KILL"]),
    "execution_id": names,
    "project_id": names,
    "name": names,
    "path": st.sampled_from(["/tmp", "/", "relative", "/nonexistent"]),
    "since_seq": counts,
    "since": counts,
    "limit": counts,
    "after_id": counts,
    "max_turns": counts,
    "cursor": names | counts,
    "state": st.sampled_from(["running", "completed", "lost", "nope"]),
    "prompt": st.text(max_size=30),
}


@st.composite
def params_for(draw: st.DrawFn, method: str) -> Any:
    """Either any JSON value, or an object using the method's own field names
    (so validation goes deep) with plausible or arbitrary values, sometimes
    plus a stray key."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    names = FIELDS.get(method) or ["x"]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    odds = 3
    if method == "execute" and draw(st.booleans()):
        # Exactly one of command and argv, the rest nearly always well typed:
        # these get past validation to the allow-list and the spawn.
        chosen = [c for c in chosen if c not in ("command", "argv")]
        chosen.append(draw(st.sampled_from(["command", "argv"])))
        odds = 15
    value: dict[str, Any] = {}
    for name in chosen:
        plausible = PLAUSIBLE.get(name)
        if plausible is not None and draw(st.integers(0, odds)) > 0:
            value[name] = draw(plausible)
        else:
            value[name] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        value[draw(st.text(max_size=6))] = draw(json_values)
    return value


@given(data=st.data())
@settings(FUZZ_SETTINGS, max_examples=PARAMS_EXAMPLES)
def test_arbitrary_params_for_every_method(fuzz: Fuzz, data: st.DataObject) -> None:
    # execute is the method that matters most: a fifth of the examples.
    method = data.draw(st.sampled_from([*fuzz.methods, *["execute"] * 4]))
    params = data.draw(params_for(method))
    request_id = data.draw(st.integers(0, 2**53) | st.text(min_size=1, max_size=10))
    request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    responses = fuzz.exchange(json.dumps(request))
    assert len(responses) == 1, responses
    response = responses[0]
    fuzz.check_response(response, method)
    assert response["id"] == request_id
    if not isinstance(params, dict | list):
        assert response["error"]["code"] == INVALID_REQUEST


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


request_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | json_values,
        "id": ids,
        "method": st.sampled_from(["status", "execute", "control", "nope", ""]) | json_values,
        "params": json_values,
    },
)


@st.composite
def frames(draw: st.DrawFn) -> tuple[str | bytes, bool]:
    """A frame and whether it goes as a text frame."""
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=200)), False
    if kind == 1:
        return draw(st.text(max_size=200)), True
    if kind == 2:
        return nested(draw(st.integers(1, 3000))), True
    if kind == 3:
        number = draw(st.sampled_from(["1e400", "-1e400", "1" * 400, "NaN", "-0", "1E-400"]))
        return f'{{"jsonrpc": "2.0", "id": {number}, "method": "status"}}', True
    if kind == 4:  # batches, duplicate ids included
        same = draw(ids)
        members = draw(
            st.lists(
                request_like
                | st.just({"jsonrpc": "2.0", "id": same, "method": "status"})
                | json_values,
                min_size=0,
                max_size=8,
            )
        )
        return json.dumps(members), True
    if kind == 5:
        return json.dumps(draw(request_like)), True
    if kind == 6:
        return json.dumps(draw(json_values)), True
    text = json.dumps(draw(request_like))
    cut = draw(st.integers(0, len(text)))
    return text[:cut], True  # truncated JSON


def expected_ids(frame: str | bytes, text: bool) -> list[Any] | None:
    """The ids that must be answered (for a frame that decodes as JSON), else None."""
    if not text:
        return [None]
    try:
        decoded = orjson.loads(frame)  # the server's parser, not Python's
    except orjson.JSONDecodeError:
        return [None]
    members = decoded if isinstance(decoded, list) and decoded else [decoded]
    wanted = []
    for member in members:
        if isinstance(member, dict) and "id" in member:
            member_id = member["id"]
            valid = member_id is None or (
                isinstance(member_id, str | int | float) and not isinstance(member_id, bool)
            )
            wanted.append(member_id if valid else None)
    return wanted


def same_id(got: Any, sent: Any) -> bool:
    if isinstance(got, int | float) and isinstance(sent, int | float) and not isinstance(got, bool):
        # The server echoes number ids exactly (tests/test_numbers.py); this side
        # read the sent id with orjson, which makes one beyond 64 bits a double.
        return got == sent or math.isclose(got, sent, rel_tol=1e-15)
    return bool(got == sent)


@given(case=frames())
@settings(FUZZ_SETTINGS, max_examples=FRAME_EXAMPLES)
def test_arbitrary_frames(fuzz: Fuzz, case: tuple[str | bytes, bool]) -> None:
    frame, text = case
    responses = fuzz.exchange(frame, text=text)
    messages = []
    for response in responses:
        messages.extend(response if isinstance(response, list) else [response])
    for message in messages:
        fuzz.check_response(message)
    wanted = expected_ids(frame, text)
    assert wanted is not None
    got = [m["id"] for m in messages]
    for member_id in wanted:
        match = next((g for g in got if same_id(g, member_id)), "missing")
        assert match != "missing", (member_id, got)
        got.remove(match)
    if isinstance(frame, str) and frame.lstrip().startswith("["):
        assert len(responses) <= 1, "a batch gets one response frame"


def test_hand_picked_frames(fuzz: Fuzz) -> None:
    cases: list[tuple[str, list[int]]] = [
        ("", [PARSE_ERROR]),
        ("\ufeff{}", [PARSE_ERROR]),
        ('{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "status"}', [0]),
        ('{"jsonrpc": "2.0", "id": 1e400, "method": "status"}', [PARSE_ERROR]),
        ('{"jsonrpc": "2.0", "id": "\\ud800", "method": "status"}', [PARSE_ERROR]),
        (nested(100000)[: MAX_FRAME_BYTES - 10], [PARSE_ERROR]),
        ("[]", [INVALID_REQUEST]),
        ("[1, 2]", [INVALID_REQUEST, INVALID_REQUEST]),
        ('{"jsonrpc": "2.0", "id": true, "method": "status"}', [INVALID_REQUEST]),
        ('{"jsonrpc": "2.0", "id": 1, "method": "status", "params": 5}', [INVALID_REQUEST]),
        ('{"jsonrpc": "2.0", "id": 1, "method": "status", "params": [1]}', [INVALID_PARAMS]),
        ('{"jsonrpc": "2.0", "id": 1, "method": "nope"}', [METHOD_NOT_FOUND]),
        ('{"jsonrpc": "2.0", "method": "status"}', []),
    ]
    batch = [{"jsonrpc": "2.0", "id": 7, "method": "status"}] * 500
    cases.append((json.dumps(batch), [0] * 500))
    for frame, codes in cases:
        responses = fuzz.exchange(frame)
        messages = []
        for response in responses:
            messages.extend(response if isinstance(response, list) else [response])
        for message in messages:
            fuzz.check_response(message)
        got = [m["error"]["code"] if "error" in m else 0 for m in messages]
        assert got == codes, (frame[:80], got)


def test_invalid_utf8_text_frame_closes_1007_and_server_lives_on(fuzz: Fuzz) -> None:
    with connect(fuzz.server.url, open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    # The shared fuzz connection and new ones keep working.
    assert fuzz.exchange('{"jsonrpc": "2.0", "id": 1, "method": "status"}')[0]["id"] == 1
