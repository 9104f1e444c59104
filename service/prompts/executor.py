"""A private executor for ``prompts run`` when none is running.

:class:`LocalExecutor` starts ``cc-executor serve`` as a child on a free
loopback port (``--port 0``), with the given data directory, and learns the
port from its JSON "listening" log line. The child's log goes to a file in
the data directory (no pipe to fill). :meth:`LocalExecutor.stop` sends
SIGTERM and waits (:meth:`~service.client.launch.ServerProcess.stop`): the
server cancels what still runs and closes its store.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.client.launch import ServerProcess, ServerStartError, run_server

LOG_NAME = "prompts-executor.log"


class ExecutorStartError(Exception):
    """The private executor did not start; the message holds its last log
    lines, :attr:`reason` the last error it logged (None when it logged none)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


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
        self.server: ServerProcess | None = None
        self.log_path = data_dir / LOG_NAME

    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        return f"ws://127.0.0.1:{self.server.port}/ws/mcp"

    def start(self) -> str:
        """Start the server; its WebSocket URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["CC_EXECUTOR_LOG_FORMAT"] = "json"
        env["CC_EXECUTOR_HOST"] = "127.0.0.1"
        env.update(self.extra_env)
        try:
            self.server = run_server(
                env,
                args=["--host", "127.0.0.1", "--data-dir", str(self.data_dir)],
                log_path=self.log_path,
                timeout_s=self.start_timeout_s,
            )
        except ServerStartError as exc:
            reason = exc.errors[-1] if exc.errors else None
            raise ExecutorStartError(str(exc), reason) from None
        return self.url

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL as a last resort; the exit code (None when
        never started). Safe twice."""
        return self.server.stop() if self.server is not None else None
