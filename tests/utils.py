"""Helpers for tests that run the real service: a real uvicorn server in a
child process on a free port, and checks that no process was left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", "0", *(extra_args or [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(data_dir),
    )
    server = RunningServer(proc=proc, port=0, data_dir=data_dir, env=env, scheme=scheme)
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            server.raw.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            server.logs.append(entry)
            if entry.get("message") == "listening" and not listening.is_set():
                server.port = int(entry["port"])
                listening.set()

    server._reader = threading.Thread(target=read, daemon=True)
    server._reader.start()
    if not listening.wait(timeout):
        server.stop(signal.SIGKILL)
        raise RuntimeError("server did not start:\n" + "\n".join(server.raw[-30:]))
    return server


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
