"""A private executor for ``prompts run`` when none is running.

:class:`LocalExecutor` starts ``cc-executor serve`` as a child on a free
loopback port (``--port 0``), with the given data directory, and learns the
port from its JSON "listening" log line. The child's log goes to a file in
the data directory (no pipe to fill). :meth:`LocalExecutor.stop` sends
SIGTERM and waits: the server cancels what still runs and closes its store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOG_NAME = "prompts-executor.log"


class ExecutorStartError(Exception):
    """The private executor did not start; the message holds its last log lines."""


class LocalExecutor:
    def __init__(
        self,
        data_dir: Path,
        start_timeout_s: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        #: Extra environment (``CC_EXECUTOR_*`` settings) for the server.
        self.extra_env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.log_path = data_dir / LOG_NAME

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"ws://127.0.0.1:{self.port}/ws/mcp"

    def start(self) -> str:
        """Start the server; its WebSocket URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["CC_EXECUTOR_LOG_FORMAT"] = "json"
        env["CC_EXECUTOR_HOST"] = "127.0.0.1"
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "serve",
                    "--port",
                    "0",
                    "--host",
                    "127.0.0.1",
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            port = self._listening_port(offset)
            if port is not None:
                self.port = port
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise ExecutorStartError(
            f"the executor did not start (log {self.log_path}):\n" + self._tail(offset)
        )

    def _listening_port(self, offset: int) -> int | None:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            for raw in log:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("message") == "listening":
                    return int(entry["port"])
        return None

    def _tail(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-20:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL as a last resort; the exit code. Safe twice."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
