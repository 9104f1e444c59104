"""Helpers for tests that run the real service: a real uvicorn server in a
child process on a free port, checks that no process was left behind, and
the small helpers many test modules share (running a coroutine with a bound,
polling, reading ``/health``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from service.client.launch import ServerProcess, run_server
from service.process import procfs

T = TypeVar("T")

MARKER_NAME = "CCX_TEST_MARKER"


@dataclass
class RunningServer:
    """A ``cc-executor serve`` child process and what it logged."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    env: dict[str, str]
    scheme: str = "ws"
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _server: ServerProcess | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ws/mcp"

    @property
    def http_url(self) -> str:
        http = "https" if self.scheme == "wss" else "http"
        return f"{http}://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log_messages(self) -> list[str]:
        return [entry.get("message", "") for entry in self.logs]

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.logs):
                if predicate(entry):
                    return entry
            time.sleep(0.02)
        raise AssertionError(f"no matching log line in {timeout}s; last: {self.raw[-5:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the server and wait (SIGKILL past ``timeout``); its exit code."""
        assert self._server is not None
        return self._server.stop(sig, timeout)


def start_server(
    data_dir: Path,
    settings: dict[str, Any] | None = None,
    extra_args: list[str] | None = None,
    scheme: str = "ws",
    timeout: float = 20,
) -> RunningServer:
    """Start ``cc-executor serve --port 0`` and wait for its "listening" line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CC_EXECUTOR_")}
    env["CC_EXECUTOR_DATA_DIR"] = str(data_dir)
    env["CC_EXECUTOR_LOG_LEVEL"] = "DEBUG"
    env["CC_EXECUTOR_KILL_GRACE_S"] = "2"
    env["CC_EXECUTOR_PASS_ENV"] = '["PATH", "HOME", "LANG", "LC_*", "' + MARKER_NAME + '"]'
    for key, value in (settings or {}).items():
        if isinstance(value, list | dict):
            value = json.dumps(value)
        env[f"CC_EXECUTOR_{key.upper()}"] = str(value)
    raw: list[str] = []
    logs: list[dict[str, Any]] = []

    def keep(line: str) -> None:
        raw.append(line)
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if isinstance(entry, dict):
            logs.append(entry)

    started = run_server(env, args=extra_args or [], cwd=data_dir, on_line=keep, timeout_s=timeout)
    return RunningServer(
        proc=started.proc,
        port=started.port,
        data_dir=data_dir,
        env=env,
        scheme=scheme,
        logs=logs,
        raw=raw,
        _server=started,
    )


def new_marker() -> tuple[str, dict[str, str]]:
    """A unique value for the test marker and the ``env`` that carries it."""
    value = uuid.uuid4().hex
    return value, {MARKER_NAME: value}


def marked_pids(value: str) -> list[int]:
    return procfs.pids_with_env(f"{MARKER_NAME}={value}".encode())


def wait_no_marked(value: str, timeout: float = 5.0) -> list[int]:
    """Wait until no live process carries the marker; the leftovers (killed)."""
    deadline = time.monotonic() + timeout
    while True:
        left = marked_pids(value)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """Run ``coro`` on a fresh event loop; TimeoutError past ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def runner(timeout: float) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """:func:`run` with another default bound, for a module whose tests take longer."""

    def run_bounded(coro: Coroutine[Any, Any, Any], timeout: float = timeout) -> Any:
        return run(coro, timeout)

    return run_bounded


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def health(server: RunningServer) -> dict[str, Any]:
    """The server's ``/health`` document."""
    return dict(get_json(server.http_url + "/health"))


def zombie_children(pid: int) -> list[int]:
    """The children of ``pid`` that exited and were not reaped."""
    return [
        s.pid
        for s in map(procfs.read_stat, procfs.all_pids())
        if s is not None and s.ppid == pid and s.state == "Z"
    ]


def serve_stopping(
    tmp_path: Path, settings: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``cc-executor serve --port 0`` with ``CC_EXECUTOR_*`` ``settings`` that
    must make it stop by itself (a bad setting, a store it cannot open)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    env["CC_EXECUTOR_DATA_DIR"] = str(tmp_path / "data")
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
