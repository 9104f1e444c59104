"""``cc-executor run`` as a real subprocess against a real server: streams,
exit status, stdin, and real signals (SIGINT, SIGTSTP, SIGCONT) sent to the
client process; a dropped TCP connection through a proxy reconnects and
attaches without losing or repeating a line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from service.cli import main
from service.process import procfs
from tests.utils import MARKER_NAME, RunningServer, marked_pids


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    return {**env, "CC_EXECUTOR_URL": url, **extra}


def marker_args(marker: dict[str, str]) -> list[str]:
    return ["--env", f"{MARKER_NAME}={marker[MARKER_NAME]}"]


def start_cli(
    url: str, *args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    # Unbuffered: readline must not pull later lines into a buffer that
    # communicate(), reading the descriptor, would never see.
    popen.setdefault("bufsize", 0)
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args], env=env or cli_env(url), **popen
    )


@pytest.fixture
def cli(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run a non-interactive subcommand in this process (the same code as the
    console script, without an interpreter start per call): (status, out, err)."""
    monkeypatch.setenv("CC_EXECUTOR_URL", server.url)
    monkeypatch.delenv("CC_EXECUTOR_TOKEN", raising=False)

    def call(*args: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main(list(args))
        out, err = capfd.readouterr()
        return code, out, err

    return call


def read_line(stream: IO[bytes], timeout: float = 10) -> bytes:
    """One line from a pipe, failing instead of hanging."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert result, f"no line within {timeout}s"
    return result[0]


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def wait_for(predicate: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def remote_states(marker: dict[str, str]) -> set[str]:
    states = set()
    for pid in marked_pids(marker[MARKER_NAME]):
        try:
            states.add(process_state(pid))
        except FileNotFoundError:
            pass
    return states


def remote_all_stopped(marker: dict[str, str]) -> bool:
    """Every marked process stopped as docs/protocol.md defines it (state T, or
    a vfork parent in D with SIGSTOP pending)."""
    stats = [procfs.read_stat(pid) for pid in marked_pids(marker[MARKER_NAME])]
    live = [s for s in stats if s is not None]
    return bool(live) and all(procfs.is_stopped(s) for s in live)


def test_streams_and_exit_status_mirrored(server: RunningServer, marker: dict[str, str]) -> None:
    """stdout and stderr apart, the exit code, 128+N for a signal, 127, 124, stdin."""
    m = marker_args(marker)
    cases = {
        "exit3": (["--", "sh", "-c", "echo out; echo err >&2; exit 3"], 3, "out\n", "err\n"),
        "kill9": (["--", "sh", "-c", "echo x; kill -9 $$"], 137, "x\n", ""),
        "missing": (["--", "no-such-command-ccx"], 127, "", "No such file"),
        "timeout": (["--timeout", "0.3", "--", "sleep", "5"], 124, "", ""),
    }
    procs = {name: start_cli(server.url, "run", *m, *args) for name, (args, *_) in cases.items()}
    piped = start_cli(server.url, "run", *m, "--", "cat", stdin=subprocess.PIPE)
    out, err = piped.communicate(b"one\ntwo\n\xc3\xa9t\xc3\xa9\n", timeout=20)
    assert (piped.returncode, out) == (0, "one\ntwo\nété\n".encode()), err
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=20)
        _, code, expected_out, expected_err = cases[name]
        assert proc.returncode == code, (name, stderr)
        assert stdout.decode() == expected_out, name
        assert expected_err in stderr.decode(), (name, stderr)


def test_runs_in_the_callers_directory(
    server: RunningServer, marker: dict[str, str], tmp_path: Any
) -> None:
    """A loopback URL means the same file system: the caller's cwd is the default;
    --cwd still names another."""
    here = tmp_path / "here dir"
    here.mkdir()
    m = marker_args(marker)
    default = start_cli(server.url, "run", *m, "--", "pwd", cwd=here)
    out, err = default.communicate(timeout=20)
    assert (default.returncode, out.decode()) == (0, f"{here}\n"), err
    assert server.data_dir != here
    chosen = start_cli(server.url, "run", *m, "--cwd", "/", "--", "pwd", cwd=here)
    out, err = chosen.communicate(timeout=20)
    assert (chosen.returncode, out.decode()) == (0, "/\n"), err


def test_output_live_and_ctrl_c_cancels(server: RunningServer, marker: dict[str, str]) -> None:
    """The first line arrives while the command still runs; SIGINT cancels the
    remote group with the kill ladder and the client exits 128+SIGTERM."""
    proc = start_cli(
        server.url, "run", *marker_args(marker), "--", "sh", "-c", "echo first; sleep 60"
    )
    assert read_line(proc.stdout) == b"first\n"  # type: ignore[arg-type]
    assert remote_states(marker), "the command should still run"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert b"cancelling" in proc.stderr.read()  # type: ignore[union-attr]
    wait_for(lambda: not marked_pids(marker[MARKER_NAME]), 5, "the group to be gone")


def test_ctrl_z_pauses_both_and_fg_resumes(server: RunningServer, marker: dict[str, str]) -> None:
    """SIGTSTP: the remote group is stopped (state T) and so is the client;
    SIGCONT: both run again and output continues."""
    script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"
    proc = start_cli(server.url, "run", *marker_args(marker), "--", "sh", "-c", script)
    assert read_line(proc.stdout) == b"1\n"  # type: ignore[arg-type]
    proc.send_signal(signal.SIGTSTP)
    wait_for(lambda: process_state(proc.pid) == "T", 5, "the client to stop")
    assert remote_all_stopped(marker), "PAUSE is confirmed before the client stops"
    proc.send_signal(signal.SIGCONT)
    wait_for(lambda: "T" not in remote_states(marker), 5, "the remote group to resume")
    last = 0
    for _ in range(5):  # lines keep coming after fg
        last = int(read_line(proc.stdout))  # type: ignore[arg-type]
    assert last > 1
    assert process_state(proc.pid) != "T"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 128 + signal.SIGTERM


def test_second_ctrl_c_disconnects(server: RunningServer, marker: dict[str, str]) -> None:
    """A command that ignores SIGTERM keeps the ladder waiting; a second Ctrl-C
    leaves at once with 130 (the server still finishes the ladder)."""
    script = "trap '' TERM; echo ready; sleep 60"
    proc = start_cli(server.url, "run", *marker_args(marker), "--", "sh", "-c", script)
    assert read_line(proc.stdout) == b"ready\n"  # type: ignore[arg-type]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None, "SIGTERM is ignored: the first Ctrl-C waits for the ladder"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 130
    assert time.monotonic() - started < 1.5
    # The ladder's SIGKILL (after the test server's 2 s grace) ends the group.
    wait_for(lambda: not marked_pids(marker[MARKER_NAME]), 6, "the ladder to finish")


def test_closed_stdout_cancels_like_sigpipe(server: RunningServer, marker: dict[str, str]) -> None:
    proc = start_cli(server.url, "run", *marker_args(marker), "--", "seq", "1", "100000000")
    assert read_line(proc.stdout) == b"1\n"  # type: ignore[arg-type]
    proc.stdout.close()  # type: ignore[union-attr]
    assert proc.wait(10) == 128 + signal.SIGPIPE
    wait_for(lambda: not marked_pids(marker[MARKER_NAME]), 5, "the group to be gone")


def test_ps_control_attach_logs(
    server: RunningServer, marker: dict[str, str], cli: Callable[..., tuple[int, str, str]]
) -> None:
    """ps lists a running execution; pause/resume/cancel by id; attach follows
    it from a seq and detaches on Ctrl-C; logs prints the stored transcript."""
    script = (
        f"echo tag-{marker[MARKER_NAME]}; i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"
    )
    runner = start_cli(server.url, "run", *marker_args(marker), "--", "sh", "-c", script)
    read_line(runner.stdout)  # type: ignore[arg-type]
    code, out, err = cli("ps", "--state", "running")
    assert code == 0, err
    # ps says whose list this is: the server and its data directory (stderr).
    assert (
        err
        == f"cc-executor: every run recorded by {server.url}, data directory {server.data_dir}\n"
    )
    line = next(row for row in out.splitlines() if f"tag-{marker[MARKER_NAME]}" in row)
    execution_id, state, _age, pid = line.split()[:4]
    assert state == "running" and int(pid) > 0
    assert cli("pause", execution_id)[1] == f"{execution_id} paused\n"
    assert remote_all_stopped(marker), remote_states(marker)
    code, _, err = cli("pause", execution_id)
    assert code == 1 and "-32005" in err
    assert cli("resume", execution_id)[1] == f"{execution_id} resumed\n"

    viewer = start_cli(server.url, "attach", execution_id)
    assert read_line(viewer.stdout) == f"tag-{marker[MARKER_NAME]}\n".encode()  # type: ignore[arg-type]
    assert read_line(viewer.stdout) == b"1\n"  # type: ignore[arg-type]
    viewer.send_signal(signal.SIGINT)
    assert viewer.wait(10) == 130
    assert remote_states(marker), "attach's Ctrl-C detaches; the command runs on"

    assert cli("cancel", execution_id)[1] == f"{execution_id} cancelled\n"
    assert runner.wait(10) == 128 + signal.SIGTERM
    code, out, err = cli("logs", execution_id)
    assert code == 0, err
    assert out.startswith(f"tag-{marker[MARKER_NAME]}\n1\n2\n3\n")
    code, _, err = cli("logs", "no-such-execution")
    assert code == 1 and "not found" in err


class DroppingProxy:
    """A TCP proxy to the server whose connections can be cut (no close frame)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop(self) -> None:
        def cut() -> None:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(cut)

    def close(self) -> None:
        self.drop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[DroppingProxy]:
    running = DroppingProxy(server.port)
    yield running
    running.close()


def test_dropped_connection_reconnects_and_attaches(
    server: RunningServer, proxy: DroppingProxy, marker: dict[str, str]
) -> None:
    """Cut the TCP connection twice mid-stream: the client reconnects, attaches
    after the last seq it printed, and the output is exactly ``seq 1 N``."""
    lines = 40000
    url = f"ws://127.0.0.1:{proxy.port}/ws/mcp"
    script = f"seq 1 {lines} | pv -q -L 150k"
    proc = start_cli(url, "run", *marker_args(marker), "--", "sh", "-c", script)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    for count in (1, 2):
        wait_for(lambda: proxy.connections == count, 10, "a connection")  # noqa: B023
        time.sleep(0.3)
        proxy.drop()
    assert proc.wait(30) == 0, proc.stderr.read()  # type: ignore[union-attr]
    reader.join(5)
    expected = "".join(f"{i}\n" for i in range(1, lines + 1)).encode()
    assert chunks[0] == expected
    assert proxy.connections >= 3
    assert b"reconnecting" in proc.stderr.read()  # type: ignore[union-attr]


def test_suspended_past_the_keepalive_reconnects_and_resumes(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    """Suspended longer than the server's ping timeout: the server drops the
    stopped client; after SIGCONT it reconnects, attaches and resumes the
    paused command, and no line is lost or repeated."""
    server = make_server({"ws_ping_interval_s": 0.3, "ws_ping_timeout_s": 0.3})
    script = "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i; sleep 0.02; done"
    proc = start_cli(server.url, "run", *marker_args(marker), "--", "sh", "-c", script)
    assert read_line(proc.stdout) == b"1\n"  # type: ignore[arg-type]
    proc.send_signal(signal.SIGTSTP)
    wait_for(lambda: process_state(proc.pid) == "T", 5, "the client to stop")
    server.wait_for_log(lambda entry: entry.get("message") == "disconnected", timeout=10)
    # Stopped as docs/protocol.md defines it: a shell caught in a vfork for its
    # `sleep` stays in D, SIGSTOP pending, until its child runs again.
    assert remote_all_stopped(marker), remote_states(marker)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert b"1\n" + out == "".join(f"{i}\n" for i in range(1, 41)).encode()
    assert b"reconnecting" in err
