"""Capture real exchanges with a running cc-executor for ``docs/protocol.md``.

Starts real servers (``cc-executor serve --port 0``, each with the settings
its scenarios need), plays every scenario below over a real WebSocket, and
records each frame exactly as it crossed the wire: ``-->`` client to server,
``<--`` server to client. With ``--write docs/protocol.md`` it replaces the
body of every block framed by ``<!-- exchange: NAME -->`` and
``<!-- /exchange -->`` with the capture of scenario NAME. A scenario that
fails (for instance a method that has not landed yet) leaves its block as it
was and is reported; the exit code is then 1.

    .venv/bin/python ci/protocol_exchanges.py                 # print all captures
    .venv/bin/python ci/protocol_exchanges.py --write docs/protocol.md
    .venv/bin/python ci/protocol_exchanges.py --only execute control
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from service.client.launch import run_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"
BLOCK_RE = re.compile(
    r"(<!-- exchange: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /exchange -->)", re.S
)

#: Settings of each server the scenarios run against.
SERVERS: dict[str, dict[str, str]] = {
    "main": {
        "TOKEN": TOKEN,
        "MAX_LINE_BYTES": "256",
        "KILL_GRACE_S": "2",
        "ALLOWED_COMMANDS": json.dumps(
            ["seq", "echo", "sh", "sleep", "cat", "printf", "yes", "fake-claude", "claude"]
        ),
    },
    "limits": {
        "MAX_EXECUTIONS_PER_CONNECTION": "1",
        "PAUSE_CONFIRM_TIMEOUT_S": "0.000001",
        "MAX_CONNECTIONS_PER_IP": "1",
    },
    "rate": {"RATE_LIMIT_PER_S": "0.1", "RATE_LIMIT_BURST": "2"},
    "store": {},
}


# --- servers --------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mcp"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str | None:
        return SERVERS[self.name].get("TOKEN")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_server(name: str, scratch: Path) -> Server:
    data_dir = scratch / name
    projects = scratch / "projects"
    data_dir.mkdir(parents=True, exist_ok=True)  # exists when a scenario restarts it
    projects.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    env.update(
        {
            "CC_EXECUTOR_DATA_DIR": str(data_dir),
            "CC_EXECUTOR_PROJECT_ROOTS": str(projects),
            "CC_EXECUTOR_CLAUDE_BIN": str(Path(sys.executable).parent / "fake-claude"),
            "XDG_STATE_HOME": str(scratch / "state"),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        }
    )
    env.update({f"CC_EXECUTOR_{key}": value for key, value in SERVERS[name].items()})
    started = run_server(env, cwd=data_dir, on_line=lambda line: None)
    return Server(name, started.proc, started.port, data_dir)


# --- recording -------------------------------------------------------------------


@dataclass
class Session:
    """One WebSocket connection whose frames are all recorded."""

    server: Server
    ws: ClientConnection
    lines: list[str] = field(default_factory=list)
    next_id: int = 1
    backlog: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, message: dict[str, Any] | list[Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.lines.append(f"--> {text}")
        await self.ws.send(text)

    async def recv(self, wait_s: float = 15.0) -> Any:
        text = await asyncio.wait_for(self.ws.recv(), wait_s)
        assert isinstance(text, str)
        self.lines.append(f"<-- {text}")
        return json.loads(text)

    async def expect(self, *wanted: Callable[[Any], bool], wait_s: float = 15.0) -> list[Any]:
        """Receive until every predicate matched a frame (each its own frame, in
        any order); returns the frames that matched, in predicate order."""
        matched: list[Any] = [None] * len(wanted)
        deadline = time.monotonic() + wait_s
        while any(item is None for item in matched):
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            for index, predicate in enumerate(wanted):
                if matched[index] is None and predicate(frame):
                    matched[index] = frame
                    break
        return matched

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.next_id += 1
        return message

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *also: Callable[[Any], bool],
        error: int | None = None,
    ) -> Any:
        """Send one request and receive until its response (and frames matching
        ``also``) arrived. The response must be a result, or the error ``error``."""
        message = self.request(method, params)
        await self.send(message)
        frames = await self.expect(response_to(message["id"]), *also)
        response = frames[0]
        if error is None and "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        if error is not None and response.get("error", {}).get("code") != error:
            raise RuntimeError(f"{method}: expected error {error}, got {response}")
        return response.get("result", response.get("error"))

    def note(self, text: str) -> None:
        self.lines.append(f"# {text}")


def response_to(request_id: Any) -> Callable[[Any], bool]:
    return lambda frame: (
        isinstance(frame, dict)
        and frame.get("id") == request_id
        and ("result" in frame or "error" in frame)
    )


def notified(method: str, **params: Any) -> Callable[[Any], bool]:
    def match(frame: Any) -> bool:
        if not isinstance(frame, dict) or frame.get("method") != method:
            return False
        got = frame.get("params", {})
        return all(got.get(key) == value for key, value in params.items())

    return match


@contextlib.asynccontextmanager
async def session(server: Server, *, show_connected: bool = False) -> AsyncIterator[Session]:
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else None
    # The previous scenario's connection may still be closing on a server
    # that allows one connection per address.
    await asyncio.sleep(0.2)
    async with websockets.connect(
        server.ws_url, additional_headers=headers, compression=None
    ) as ws:
        recorder = Session(server, ws)
        await recorder.expect(notified("connected"))
        if not show_connected:
            recorder.lines.clear()
        yield recorder


async def completed(recorder: Session, execution_id: str) -> dict[str, Any]:
    frames = await recorder.expect(notified("process.completed", execution_id=execution_id))
    return dict(frames[0]["params"])


# --- scenarios ------------------------------------------------------------------

Scenario = Callable[[Server], Awaitable[list[str]]]
SCENARIOS: dict[str, tuple[str, Scenario]] = {}


def scenario(name: str, server: str = "main") -> Callable[[Scenario], Scenario]:
    def register(function: Scenario) -> Scenario:
        SCENARIOS[name] = (server, function)
        return function

    return register


@scenario("connected")
async def _connected(server: Server) -> list[str]:
    async with session(server, show_connected=True) as s:
        return s.lines


@scenario("execute")
async def _execute(server: Server) -> list[str]:
    async with session(server) as s:
        result = await s.call("execute", {"argv": ["seq", "1", "3"]})
        await completed(s, result["execution_id"])
        return s.lines


@scenario("execute-command")
async def _execute_command(server: Server) -> list[str]:
    async with session(server) as s:
        params = {"command": "sh -c 'echo out; echo err >&2; exit 3'", "timeout": 30}
        result = await s.call("execute", params)
        await completed(s, result["execution_id"])
        return s.lines


@scenario("execute-cwd-env")
async def _execute_cwd_env(server: Server) -> list[str]:
    async with session(server) as s:
        params = {
            "argv": ["sh", "-c", 'echo "$GREETING from $(pwd)"'],
            "cwd": "/tmp",
            "env": {"GREETING": "hello"},
        }
        result = await s.call("execute", params)
        await completed(s, result["execution_id"])
        return s.lines


@scenario("truncated")
async def _truncated(server: Server) -> list[str]:
    async with session(server) as s:
        s.note("this server runs with CC_EXECUTOR_MAX_LINE_BYTES=256")
        result = await s.call("execute", {"argv": ["sh", "-c", "printf '%0300d\\n' 7; echo ok"]})
        await completed(s, result["execution_id"])
        return s.lines


@scenario("timeout")
async def _timeout(server: Server) -> list[str]:
    async with session(server) as s:
        result = await s.call("execute", {"argv": ["sleep", "30"], "timeout": 0.5})
        await completed(s, result["execution_id"])
        return s.lines


@scenario("input")
async def _input(server: Server) -> list[str]:
    async with session(server) as s:
        result = await s.call("execute", {"argv": ["cat"], "stdin": True})
        execution_id = result["execution_id"]
        await s.call(
            "input",
            {"execution_id": execution_id, "data": "hello\n"},
            notified("process.output", execution_id=execution_id),
        )
        await s.call("input", {"execution_id": execution_id, "data": "bye\n", "eof": True})
        await completed(s, execution_id)
        return s.lines


@scenario("control")
async def _control(server: Server) -> list[str]:
    async with session(server) as s:
        script = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.3; done"
        result = await s.call("execute", {"argv": ["sh", "-c", script]})
        execution_id = result["execution_id"]
        await s.expect(notified("process.output", execution_id=execution_id))
        await s.call(
            "control",
            {"type": "PAUSE", "execution_id": execution_id},
            notified("process.paused", execution_id=execution_id),
        )
        await asyncio.sleep(1.0)
        s.note("one second paused: no output")
        await s.call(
            "control",
            {"type": "resume", "execution_id": execution_id},
            notified("process.resumed", execution_id=execution_id),
        )
        await s.expect(notified("process.output", execution_id=execution_id))
        s.note("no execution_id: the connection's only live execution")
        await s.call("control", {"type": "CANCEL"}, notified("process.cancelled"))
        await completed(s, execution_id)
        return s.lines


@scenario("status")
async def _status(server: Server) -> list[str]:
    async with session(server) as s:
        result = await s.call("execute", {"argv": ["sleep", "30"]})
        execution_id = result["execution_id"]
        await s.call("execute", {"argv": ["echo", "done"]})
        await s.expect(notified("process.completed"))
        await s.call("status", {"execution_id": execution_id})
        await s.call("status")
        await s.call("control", {"type": "CANCEL", "execution_id": execution_id})
        await completed(s, execution_id)
        return s.lines


@scenario("batch")
async def _batch(server: Server) -> list[str]:
    async with session(server) as s:
        batch = [
            s.request("execute", {"argv": ["echo", "in a batch"]}),
            s.request("status"),
            {"jsonrpc": "2.0", "method": "status"},
            s.request("no.such.method"),
        ]
        await s.send(batch)
        frames = await s.expect(lambda f: isinstance(f, list), notified("process.completed"))
        del frames
        return s.lines


@scenario("notification-request")
async def _notification_request(server: Server) -> list[str]:
    async with session(server) as s:
        await s.send({"jsonrpc": "2.0", "method": "status"})
        s.note("a request without id is a notification: no response")
        await s.call("status")
        return s.lines


@scenario("errors-protocol")
async def _errors_protocol(server: Server) -> list[str]:
    async with session(server) as s:
        await s.send('{"jsonrpc": "2.0", "id": 1, "method": "status"')
        await s.expect(lambda f: f.get("error", {}).get("code") == -32700)
        await s.send({"jsonrpc": "1.0", "id": 2, "method": "status"})
        await s.expect(response_to(2))
        s.next_id = 3
        await s.send("[]")
        await s.expect(lambda f: f.get("error", {}).get("code") == -32600)
        await s.call("execute.now", {"argv": ["true"]}, error=-32601)
        await s.call("execute", {"argv": ["sleep", "1"], "timout": 5}, error=-32602)
        await s.call("control", {"type": "STOP"}, error=-32602)
        return s.lines


@scenario("errors-execution")
async def _errors_execution(server: Server) -> list[str]:
    async with session(server) as s:
        await s.call("execute", {"argv": ["rm", "-rf", "/tmp/x"]}, error=-32002)
        await s.call("execute", {"command": "echo $HOME", "shell": True}, error=-32002)
        await s.call("control", {"type": "CANCEL", "execution_id": "f00"}, error=-32003)
        result = await s.call("execute", {"argv": ["sleep", "30"]})
        execution_id = result["execution_id"]
        await s.call("control", {"type": "RESUME", "execution_id": execution_id}, error=-32005)
        await s.call("control", {"type": "CANCEL", "execution_id": execution_id})
        await completed(s, execution_id)
        await s.call("control", {"type": "CANCEL", "execution_id": execution_id}, error=-32005)
        await s.call("input", {"execution_id": execution_id, "data": "x"}, error=-32005)
        return s.lines


@scenario("errors-limits", server="limits")
async def _errors_limits(server: Server) -> list[str]:
    async with session(server) as s:
        s.note("this server runs with CC_EXECUTOR_MAX_EXECUTIONS_PER_CONNECTION=1")
        busy = "for i in $(seq 16); do yes > /dev/null & done; wait"
        result = await s.call("execute", {"argv": ["sh", "-c", busy]})
        execution_id = result["execution_id"]
        await s.call("execute", {"argv": ["sleep", "1"]}, error=-32001)
        s.note(
            "and CC_EXECUTOR_PAUSE_CONFIRM_TIMEOUT_S=0.000001: 17 busy processes cannot all "
            "be seen stopped that fast"
        )
        for _ in range(20):
            message = s.request("control", {"type": "PAUSE", "execution_id": execution_id})
            mark = len(s.lines)
            await s.send(message)
            frames = await s.expect(response_to(message["id"]))
            if frames[0].get("error", {}).get("code") == -32004:
                break
            # The group stopped at once this time: undo, and do not show the attempt.
            resume = s.request("control", {"type": "RESUME", "execution_id": execution_id})
            await s.send(resume)
            await s.expect(response_to(resume["id"]))
            del s.lines[mark:]
            s.next_id -= 2
        else:
            raise RuntimeError("PAUSE never timed out")
        await s.call("control", {"type": "CANCEL", "execution_id": execution_id})
        await completed(s, execution_id)
        return s.lines


@scenario("errors-connection-limit", server="limits")
async def _errors_connection_limit(server: Server) -> list[str]:
    async with session(server):
        async with websockets.connect(server.ws_url, compression=None) as second:
            lines = ["# a second connection from the same address (MAX_CONNECTIONS_PER_IP=1)"]
            frame = await asyncio.wait_for(second.recv(), 5)
            lines.append(f"<-- {frame}")
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(second.recv(), 5)
            close = second.close_code, second.close_reason
            lines.append(f"# closed by the server: code {close[0]}, reason {close[1]!r}")
            return lines


@scenario("errors-rate", server="rate")
async def _errors_rate(server: Server) -> list[str]:
    async with session(server) as s:
        s.note("this server runs with CC_EXECUTOR_RATE_LIMIT_BURST=2, RATE_LIMIT_PER_S=0.1")
        await s.call("status")
        await s.call("status")
        await s.call("status", None, error=-32006)
        return s.lines


@scenario("errors-store", server="store")
async def _errors_store(server: Server) -> list[str]:
    async with session(server) as s:
        result = await s.call("execute", {"argv": ["sh", "-c", "printf 'q%.0s' $(seq 300)"]})
        await completed(s, result["execution_id"])
    execution_id = result["execution_id"]
    server.stop()
    # 100 bytes of the stored chunk overwritten: PRAGMA quick_check still passes.
    path = server.data_dir / "cc-executor.sqlite3"
    raw = path.read_bytes()
    at = raw.index(b"q" * 200)
    path.write_bytes(raw[:at] + b"\xff" * 100 + raw[at + 100 :])
    again = start_server("store", server.data_dir.parent)
    try:
        async with session(again) as s:
            s.note(f"execution {execution_id} printed 300 q; 100 bytes of its chunk are damaged")
            await s.call("transcript.get", {"execution_id": execution_id}, error=-32007)
            await s.call(
                "attach",
                {"execution_id": execution_id},
                notified("process.error", execution_id=execution_id),
            )
            return s.lines
    finally:
        again.stop()


@scenario("attach")
async def _attach(server: Server) -> list[str]:
    script = "echo one; sleep 0.3; echo two; sleep 1; echo three"
    async with session(server) as first:
        first.note("first connection: start, read seq 1 and 2, then go away")
        result = await first.call("execute", {"argv": ["sh", "-c", script]})
        execution_id = result["execution_id"]
        await first.expect(lambda f: f.get("params", {}).get("seq") == 2)
    lines = first.lines
    async with session(server) as second:
        second.note("a new connection attaches after seq 1: seq 2 is replayed, seq 3 is live")
        await second.call("attach", {"execution_id": execution_id, "since_seq": 1})
        await completed(second, execution_id)
        return [*lines, *second.lines]


@scenario("transcript.get")
async def _transcript_get(server: Server) -> list[str]:
    async with session(server) as s:
        script = "echo alpha; sleep 0.1; echo beta >&2; sleep 0.1; echo gamma"
        result = await s.call("execute", {"argv": ["sh", "-c", script]})
        execution_id = result["execution_id"]
        await completed(s, execution_id)
        s.lines.clear()
        s.note(f"execution {execution_id} ran: echo alpha; echo beta >&2; echo gamma")
        page = await s.call("transcript.get", {"execution_id": execution_id, "limit": 2})
        await s.call(
            "transcript.get",
            {"execution_id": execution_id, "since_seq": page["next_since_seq"], "limit": 2},
        )
        await s.call("transcript.get", {"execution_id": "nope"}, error=-32003)
        return s.lines


@scenario("executions.list")
async def _executions_list(server: Server) -> list[str]:
    async with session(server) as s:
        page = await s.call("executions.list", {"limit": 2})
        if page["next_cursor"] is not None:
            await s.call("executions.list", {"limit": 1, "cursor": page["next_cursor"]})
        await s.call("executions.list", {"state": ["cancelled", "timed_out"], "limit": 1})
        return s.lines


@scenario("project")
async def _project(server: Server) -> list[str]:
    path = server.data_dir.parent / "projects" / "demo"
    path.mkdir(parents=True, exist_ok=True)
    async with session(server) as s:
        project = await s.call("project.create", {"name": "demo", "path": str(path)})
        project_id = project["project_id"]
        await s.call("project.list")
        await s.call("project.get", {"project_id": project_id})
        await s.call("project.subscribe", {"project_id": project_id})
        await s.call("project.unsubscribe", {"project_id": project_id})
        await s.call("project.create", {"name": "again", "path": str(path)}, error=-32602)
        await s.call("project.delete", {"project_id": project_id})
        await s.call("project.get", {"project_id": project_id}, error=-32003)
        return s.lines


async def _new_project(s: Session, name: str) -> str:
    path = s.server.data_dir.parent / "projects" / name
    path.mkdir(parents=True, exist_ok=True)
    project = await s.call("project.create", {"name": name, "path": str(path)})
    return str(project["project_id"])


@scenario("agent")
async def _agent(server: Server) -> list[str]:
    async with session(server) as s:
        s.note("the server runs fake-claude (the test double of the Claude Code CLI)")
        project_id = await _new_project(s, "agent-demo")
        await s.call("project.subscribe", {"project_id": project_id})
        result = await s.call(
            "agent.execute", {"project_id": project_id, "prompt": "List the files."}
        )
        await s.expect(
            notified("agent.result", project_id=project_id),
            notified("process.completed", execution_id=result["execution_id"]),
        )
        return s.lines


@scenario("agent-session")
async def _agent_session(server: Server) -> list[str]:
    async with session(server) as s:
        project_id = await _new_project(s, "agent-session")
        s.lines.clear()
        result = await s.call(
            "agent.execute", {"project_id": project_id, "prompt": "fake:slow=30 Think hard."}
        )
        execution_id = result["execution_id"]
        await s.expect(notified("process.output", execution_id=execution_id))
        await s.call(
            "agent.kill",
            {"project_id": project_id},
            notified("process.completed", execution_id=execution_id),
        )
        await s.call("agent.new_session", {"project_id": project_id})
        await s.call("agent.kill", {"project_id": project_id}, error=-32005)
        return s.lines


@scenario("approvals")
async def _approvals(server: Server) -> list[str]:
    async with session(server) as s:
        s.note("fake:permission=Bash makes fake-claude call the approve tool on /mcp")
        project_id = await _new_project(s, "approvals-demo")
        result = await s.call(
            "agent.execute",
            {"project_id": project_id, "prompt": "fake:permission=Bash", "approvals": "clients"},
        )
        execution_id = result["execution_id"]
        [asked] = await s.expect(notified("agent.permission", execution_id=execution_id))
        request_id = asked["params"]["request_id"]
        await s.call("agent.permissions", {"project_id": project_id})
        await s.call(
            "agent.decide",
            {"request_id": request_id, "behavior": "allow", "updated_input": {"command": "ls -a"}},
            notified("agent.permission_resolved", request_id=request_id),
        )
        await s.call("agent.decide", {"request_id": request_id, "behavior": "deny"}, error=-32005)
        await completed(s, execution_id)
        return s.lines


@scenario("messages.get")
async def _messages_get(server: Server) -> list[str]:
    async with session(server) as s:
        project_id = await _new_project(s, "history")
        result = await s.call("agent.execute", {"project_id": project_id, "prompt": "Hello"})
        await completed(s, result["execution_id"])
        s.lines.clear()
        page = await s.call("messages.get", {"project_id": project_id, "limit": 2})
        await s.call(
            "messages.get", {"project_id": project_id, "limit": 2, "cursor": page["next_cursor"]}
        )
        return s.lines


@scenario("prompts")
async def _prompts(server: Server) -> list[str]:
    marker = "run-7f3a9c2e41d84b06"
    async with session(server) as s:
        result = await s.call("execute", {"argv": ["echo", f"{marker} DONE"]})
        execution_id = result["execution_id"]
        await completed(s, execution_id)
        s.lines.clear()
        s.note(f"execution {execution_id} ran: echo {marker} DONE")
        claim = {
            "prompt": "demo",
            "version": 1,
            "execution_id": execution_id,
            "marker": marker,
            "patterns": ["DONE"],
        }
        await s.call("prompts.record", claim)
        await s.call("prompts.record", claim, error=-32005)
        await s.call("prompts.records", {"prompt": "demo"})
        return s.lines


@scenario("stats")
async def _stats(server: Server) -> list[str]:
    async with session(server) as s:
        await s.call("stats.subscribe", {"interval_s": 0.5}, error=-32602)
        await s.call("stats.subscribe", {"interval_s": 1})
        await s.expect(notified("server.stats"), wait_s=5)
        s.note("an execution of `seq 1 3` runs here (its frames are left out)")
        result = await s.call("execute", {"argv": ["seq", "1", "3"]})
        await completed(s, result["execution_id"])
        await s.expect(notified("server.stats"), wait_s=5)
        await s.call("stats.unsubscribe")
        execution = ('"method": "execute"', "execution_id")
        return [line for line in s.lines if not any(text in line for text in execution)]


#: Families of /metrics shown in the http block (docs/observability.md has them all).
METRICS_SHOWN = (
    "cc_executor_executions_total",
    "cc_executor_requests_total",
    "cc_executor_connections",
    "cc_executor_spawn_seconds",
    "process_resident_memory_bytes",
)


def metrics_excerpt(body: str) -> list[str]:
    """The lines of the shown families, histograms without their buckets."""
    shown = []
    for line in body.splitlines():
        words = line.split()
        name = words[2] if line.startswith("# ") and len(words) > 2 else line.split("{")[0]
        name = name.split()[0] if name else name
        if "_bucket" in line or "_created" in name:
            continue
        if any(name == family or name.startswith(family + "_") for family in METRICS_SHOWN):
            shown.append(line)
    return shown


@scenario("http")
async def _http(server: Server) -> list[str]:
    lines: list[str] = []

    def get(path: str, token: str | None = None) -> None:
        request = urllib.request.Request(server.http_url + path)
        shown = f"--> GET {path}"
        if token:
            request.add_header("Authorization", f"Bearer {token}")
            shown += f"  (Authorization: Bearer {token})"
        lines.append(shown)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        if path == "/metrics" and status == 200:
            lines.append(f"<-- {status} (an excerpt: {', '.join(METRICS_SHOWN)})")
            lines.extend(metrics_excerpt(body))
            return
        lines.append(f"<-- {status} {body}")

    await asyncio.to_thread(get, "/healthz")
    await asyncio.to_thread(get, "/health")
    await asyncio.to_thread(get, "/health", TOKEN)
    await asyncio.to_thread(get, "/metrics", TOKEN)
    return lines


# --- main -------------------------------------------------------------------------


def render(lines: list[str]) -> str:
    return "```text\n" + "\n".join(lines) + "\n```\n"


async def capture(names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    captures: dict[str, str] = {}
    failures: dict[str, str] = {}
    needed = sorted({SCENARIOS[name][0] for name in names})
    # A fixed place, so that paths in the captures do not change from run to run.
    scratch = Path(tempfile.gettempdir()) / "ccx-protocol"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    servers: dict[str, Server] = {}
    try:
        try:
            for name in needed:
                servers[name] = start_server(name, scratch)
            for name in names:
                server_name, function = SCENARIOS[name]
                try:
                    lines = await asyncio.wait_for(function(servers[server_name]), 60)
                except Exception as exc:
                    failures[name] = f"{type(exc).__name__}: {exc}"
                    continue
                captures[name] = render(lines)
        finally:
            for server in servers.values():
                server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return captures, failures


def fill(page: str, captures: dict[str, str]) -> tuple[str, list[str]]:
    """The page with every known block replaced; and the block names it holds."""
    seen: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        seen.append(name)
        if name not in captures:
            return match.group(0)  # not captured this time: left exactly as it was
        return match.group(1) + "\n" + captures[name] + "\n" + match.group(4)

    return BLOCK_RE.sub(replace, page), seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="fill the exchange blocks of this page")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="these scenarios")
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    captures, failures = asyncio.run(capture(names))
    if args.write is None:
        for name, body in captures.items():
            print(f"<!-- exchange: {name} -->\n\n{body}\n<!-- /exchange -->\n")
    else:
        page, seen = fill(args.write.read_text(encoding="utf-8"), captures)
        args.write.write_text(page, encoding="utf-8")
        for name in sorted(set(names) - set(seen)):
            print(f"protocol: scenario {name} has no block in {args.write}", file=sys.stderr)
        for name in sorted(set(seen) - set(SCENARIOS)):
            print(f"protocol: block {name} has no scenario", file=sys.stderr)
    for name, reason in failures.items():
        print(f"protocol: scenario {name} failed (block left as it was): {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
