"""The two servers under test, as child processes on loopback.

:class:`CcExecutorServer` runs ``python -m service serve --port 0`` with its
settings in ``CC_EXECUTOR_*`` variables and reads the port from its JSON
"listening" log line; :class:`WebsocketdServer` runs ``websocketd`` on a free
port for one command. Both log to files (a pipe read by a thread of the bench
would steal the client's CPU). Server CPU seconds and RSS come from ``/proc``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from service.client.launch import run_server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` itself (not of its children)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read()
    fields = raw[raw.rfind(b")") + 2 :].split()
    # After the command name: state is field 0, utime 11, stime 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except (FileNotFoundError, ProcessLookupError):
        return 0


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                raw = handle.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(raw[raw.rfind(b")") + 2 :].split()[1]) == pid:
            children.append(int(name))
    return children


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` (``T`` is stopped); empty when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class CcExecutorServer:
    """``cc-executor serve`` on a free port, with ``settings`` as CC_EXECUTOR_* env."""

    name = "cc-executor"

    def __init__(
        self, work_dir: Path, settings: Mapping[str, object], source: Path | None = None
    ) -> None:
        self.work_dir = work_dir
        self.settings = dict(settings)
        #: Another checkout whose ``service`` package runs instead of this one's
        #: (``git archive REV | tar -x -C DIR``): A/B against an earlier commit.
        self.source = source
        self.log_path = work_dir / "cc-executor.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mcp"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
        env["CC_EXECUTOR_DATA_DIR"] = str(self.work_dir / "data")
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source.resolve())
        for key, value in self.settings.items():
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"CC_EXECUTOR_{key.upper()}"] = text
        return env

    def start(self, timeout_s: float = 20.0) -> None:
        self.log_path.unlink(missing_ok=True)  # this run's log alone
        started = run_server(
            self.environment(), cwd=self.work_dir, log_path=self.log_path, timeout_s=timeout_s
        )
        self.proc, self.port = started.proc, started.port

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class WebsocketdServer:
    """``websocketd --port=P --address=127.0.0.1 COMMAND...`` on a free port.

    ``pass_env`` names extra variables of ``env`` that websocketd hands to
    its children (it cleans out all others but PATH and LD_LIBRARY_PATH).
    """

    name = "websocketd"

    def __init__(
        self,
        work_dir: Path,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.argv = list(argv)
        self.env = dict(env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.port = free_port()
        pass_env = ",".join(["PATH", "LD_LIBRARY_PATH", *self.env])
        log_path = self.work_dir / f"websocketd-{self.argv[0]}-{self.port}.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "websocketd",
                    f"--port={self.port}",
                    "--address=127.0.0.1",
                    f"--passenv={pass_env}",
                    *self.argv,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=str(self.work_dir),
            )
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        """Stop websocketd and every child it still has (SIGTERM would orphan them).

        The children are killed first, while they are certainly still ours.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for pid in child_pids(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        stop_process(self.proc)


def start_profiler(pid: int, output: Path, rate_hz: int = 200) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (every thread, not pausing it) into ``output``
    as folded stacks, one ``frame;frame;... count`` per line."""
    py_spy = Path(sys.executable).with_name("py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(py_spy) if py_spy.exists() else "py-spy",
            "record",
            "--pid",
            str(pid),
            "--output",
            str(output),
            "--format",
            "raw",
            "--rate",
            str(rate_hz),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the first workload
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write its file and exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
