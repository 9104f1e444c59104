"""Starting ``cc-executor serve`` as a child process on a free loopback port.

:func:`run_server` is the one way the tools that need a server of their own
(the tests, the protocol exchanges, the Locust launcher, the benchmarks,
``prompts run``) start one: ``python -m service serve --port 0`` with the
given environment, and the port learned from the server's JSON ``listening``
log line (so ``CC_EXECUTOR_LOG_FORMAT`` must stay ``json``, the default).

The child's log goes either to a file (``log_path``, appended: nothing to
drain, it outlives the launcher) or, line by line, to ``on_line`` (a reader
thread drains the pipe, so the server never blocks on a full one).
:meth:`ServerProcess.stop` sends SIGTERM and waits, SIGKILL as a last resort.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How many of the last log lines a start failure quotes.
TAIL_LINES = 30


class ServerStartError(RuntimeError):
    """The server exited or did not log ``listening`` in time; the message
    holds its last log lines, :attr:`errors` the messages of those at level
    ERROR or above (why it exited, usually the last one)."""

    def __init__(self, message: str, tail: Sequence[str | bytes]) -> None:
        super().__init__(message)
        self.errors = [text for text in map(error_message, tail) if text is not None]


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    #: Where the log goes (None: to ``on_line``).
    log_path: Path | None = None
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Signal the server (SIGTERM: a graceful shutdown) and wait; SIGKILL
        past ``timeout_s``. The exit code. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        if self.reader is not None:
            self.reader.join(5)
        return code


def log_entry(line: str | bytes) -> dict[str, Any]:
    """One JSON log line as a dict; empty for a line that is not one."""
    try:
        entry: Any = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def listening_port(line: str | bytes) -> int | None:
    """The port of a ``listening`` log line; None for any other line."""
    entry = log_entry(line)
    return int(entry["port"]) if entry.get("message") == "listening" else None


def error_message(line: str | bytes) -> str | None:
    """The message of an ERROR or CRITICAL log line; None for any other line."""
    entry = log_entry(line)
    return str(entry.get("message")) if entry.get("level") in ("ERROR", "CRITICAL") else None


def run_server(
    env: Mapping[str, str],
    *,
    args: Sequence[str] = (),
    cwd: Path | None = None,
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float = 20.0,
    start_new_session: bool = False,
) -> ServerProcess:
    """Start ``python -m service serve --port 0 *args`` with exactly ``env``
    and wait for it to listen. Raises :class:`ServerStartError` (the server
    is stopped) when it exits first or ``timeout_s`` passes."""
    argv = [sys.executable, "-m", "service", "serve", "--port", "0", *args]
    if log_path is not None:
        return _run_logged(argv, env, cwd, log_path, timeout_s, start_new_session)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        start_new_session=start_new_session,
    )
    ports: list[int] = []
    tail: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            del tail[:-TAIL_LINES]
            if on_line is not None:
                on_line(line)
            if not listening.is_set():
                port = listening_port(line)
                if port is not None:
                    ports.append(port)
                    listening.set()
        listening.set()  # EOF: the server is gone

    reader = threading.Thread(target=read, name="server-log", daemon=True)
    reader.start()
    server = ServerProcess(proc, 0, None, reader)
    if not listening.wait(timeout_s) or not ports:
        server.stop(signal.SIGKILL)
        raise ServerStartError("the server did not start:\n" + "\n".join(tail), tail)
    server.port = ports[0]
    return server


def _run_logged(
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path | None,
    log_path: Path,
    timeout_s: float,
    start_new_session: bool,
) -> ServerProcess:
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=start_new_session,
        )
    server = ServerProcess(proc, 0, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        with open(log_path, "rb") as log:
            log.seek(offset)
            lines = log.read().splitlines()
        for line in lines:
            port = listening_port(line)
            if port is not None:
                server.port = port
                return server
        if exited:
            break
        time.sleep(0.05)
    server.stop()
    text = "\n".join(line.decode(errors="replace") for line in lines[-TAIL_LINES:])
    raise ServerStartError(
        f"the server did not start (log {log_path}):\n{text}", lines[-TAIL_LINES:]
    )
