"""Helpers for tests that run the real service: a real uvicorn server in a
child process on a free port, and checks that no process was left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.client.launch import run_server
from service.process import procfs

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
    _reader: threading.Thread | None = None

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
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return code


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
        _reader=started.reader,
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
