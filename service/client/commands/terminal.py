"""The local terminal side of a remote execution: ``cc-executor run`` and
``cc-executor attach`` behave like the command running here.

:class:`TerminalSession` writes ``process.output`` to this process's stdout and
stderr as it arrives, maps local signals to controls and mirrors the remote
exit status:

- SIGINT (Ctrl-C), SIGTERM, SIGHUP: CANCEL (the server's kill ladder); a
  second SIGINT disconnects at once (exit 130). ``attach`` detaches instead of
  cancelling.
- SIGTSTP (Ctrl-Z): PAUSE, confirmed by the server, then this process stops
  itself; when it continues (``fg``, SIGCONT) it sends RESUME.
- A closed stdout (``| head``): CANCEL and exit 141, as SIGPIPE would.
- A dropped connection: reconnect with backoff for ``reconnect_s`` and
  ``attach`` with the last seq seen, so no line is lost or repeated (needs a
  server with the store).

While suspended, the client cannot answer the server's keepalive pings: the
server drops the connection after about ``ws_ping_interval_s +
ws_ping_timeout_s`` and keeps the paused execution for ``detach_grace_s``;
``fg`` within that window reconnects and resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

from service import errors
from service.client import ConnectionLost, ExecutorClient, RemoteExecution
from service.client.commands import EXIT_BROKEN_PIPE, EXIT_NO_SERVER, CommandError, connect, report

EXIT_TIMED_OUT = 124

EXIT_INTERRUPTED = 128 + signal.SIGINT
INPUT_CHUNK_BYTES = 64 * 1024


class Mode(enum.Enum):
    """What the first Ctrl-C does: ``run`` owns the command, ``attach`` watches."""

    RUN = "run"
    ATTACH = "attach"


def exit_status(completed: dict[str, Any]) -> int:
    """The local exit status of a ``process.completed``: the exit code, 128 + N
    when killed by signal N, 124 when timed out."""
    if completed.get("status") == "timed_out":
        return EXIT_TIMED_OUT
    signum = completed.get("signal")
    if signum:
        return 128 + int(signum)
    code = completed.get("exit_code")
    if code is not None:
        return int(code)
    return 0 if completed.get("status") == "completed" else 1


class TerminalSession:
    """Mirror one execution in this process until it completes or we detach.

    ``client`` is connected and ``execution`` belongs to it; ``factory`` builds
    a fresh (unconnected) client for reconnecting. :meth:`follow` returns the
    exit status. Signal handlers are installed for the duration of
    :meth:`follow` only.
    """

    def __init__(
        self,
        factory: Callable[[], ExecutorClient],
        client: ExecutorClient,
        execution: RemoteExecution,
        mode: Mode = Mode.RUN,
        *,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        reconnect_s: float = 30.0,
        last_seq: int = 0,
    ) -> None:
        self.factory = factory
        self.client = client
        self.execution = execution
        self.mode = mode
        self.stdout = stdout or sys.stdout.buffer
        self.stderr = stderr or sys.stderr.buffer
        self.reconnect_s = reconnect_s
        self.last_seq = last_seq
        self.interrupts = 0
        self.detached = False
        self.cancel_sent = False
        self.broken_pipe = False
        #: RESUME could not be sent after a suspension; send it after reattaching.
        self.resume_pending = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._suspending = False

    # --- the stream ------------------------------------------------------------

    async def follow(self) -> int:
        loop = asyncio.get_running_loop()
        handled = self._install(loop)
        try:
            while True:
                try:
                    completed = await self._drain()
                except ConnectionLost:
                    if self.detached:
                        return EXIT_INTERRUPTED
                    await self._reattach()
                    continue
                if completed is None:  # detached on purpose
                    return EXIT_INTERRUPTED
                if self.broken_pipe:
                    return EXIT_BROKEN_PIPE
                return exit_status(completed)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.client.close()

    async def _drain(self) -> dict[str, Any] | None:
        async for message in self.execution.events():
            method = message["method"]
            params = message["params"]
            if method == "process.output":
                seq = int(params.get("seq", 0))
                if seq and seq <= self.last_seq:
                    continue  # already written before a reconnect
                self.last_seq = max(self.last_seq, seq)
                self._write(params.get("type", "stdout"), params.get("data", ""))
            elif method == "process.error":
                report(f"error: {params.get('error')}")
            elif method == "process.completed":
                return dict(params)
        return None

    def _write(self, stream: str, data: str) -> None:
        if self.broken_pipe and stream == "stdout":
            return
        target = self.stderr if stream == "stderr" else self.stdout
        try:
            target.write(data.encode("utf-8", "surrogateescape"))
            target.flush()
        except BrokenPipeError:
            if stream == "stdout":
                self.broken_pipe = True
                # Python would complain again when it flushes stdout at exit.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
                self._spawn(self._cancel("stdout closed"))

    async def _reattach(self) -> None:
        """Reconnect and attach after the last seq seen; CommandError when the
        server stays away or cannot attach."""
        execution_id = self.execution.id
        report(f"connection lost; reconnecting to attach {execution_id} after seq {self.last_seq}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_s
        delay = 0.1
        while True:
            client = self.factory()
            try:
                await connect(client)
                break
            except CommandError as exc:
                if exc.status != EXIT_NO_SERVER or loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            execution = await client.attach(execution_id, since_seq=self.last_seq)
        except errors.MethodNotFound:
            await client.close()
            raise CommandError(
                f"connection lost and this server cannot attach to {execution_id}",
                EXIT_NO_SERVER,
            ) from None
        except errors.RpcError as exc:
            await client.close()
            raise CommandError(
                f"cannot attach to {execution_id}: {exc.message}", EXIT_NO_SERVER
            ) from None
        await self.client.close()
        self.client = client
        self.execution = execution
        if self.resume_pending:
            self.resume_pending = False
            with contextlib.suppress(errors.InvalidState):
                await execution.resume()

    # --- signals ---------------------------------------------------------------

    def _install(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGINT: self._on_interrupt,
            signal.SIGTERM: self._on_terminate,
            signal.SIGHUP: self._on_terminate,
            signal.SIGTSTP: self._on_suspend,
        }
        installed = []
        for signum, handler in handlers.items():
            try:
                loop.add_signal_handler(signum, handler)
            except (ValueError, RuntimeError, NotImplementedError):
                continue  # not the main thread: leave the signal alone
            installed.append(signum)
        return installed

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_interrupt(self) -> None:
        self.interrupts += 1
        if self.mode is Mode.ATTACH or self.interrupts > 1:
            self._spawn(self._detach())
            return
        report("cancelling (press Ctrl-C again to disconnect)")
        self._spawn(self._cancel("interrupted"))

    def _on_terminate(self) -> None:
        if self.mode is Mode.ATTACH:
            self._spawn(self._detach())
        else:
            self._spawn(self._cancel("terminated"))

    def _on_suspend(self) -> None:
        if not self._suspending:
            self._suspending = True
            self._spawn(self._suspend())

    async def _detach(self) -> None:
        self.detached = True
        await self.client.close()

    async def _cancel(self, why: str) -> None:
        if self.cancel_sent:
            return
        self.cancel_sent = True
        try:
            await self.execution.cancel()
        except errors.InvalidState:
            pass  # it is ending already
        except (errors.RpcError, ConnectionLost) as exc:
            report(f"cancel failed ({why}): {exc}")

    async def _suspend(self) -> None:
        """PAUSE, stop this process; on SIGCONT, RESUME."""
        try:
            paused = False
            try:
                await self.execution.pause()
                paused = True
            except errors.InvalidState:
                pass  # finished or ending: suspend the client alone
            except (errors.RpcError, ConnectionLost) as exc:
                report(f"pause failed: {exc}")
            self.stdout.flush()
            # SIGSTOP, not SIGTSTP: the kernel discards SIGTSTP in an orphaned
            # process group, and the shell sees a stopped job either way.
            os.kill(os.getpid(), signal.SIGSTOP)
            # Running again: fg, bg or SIGCONT.
            if paused:
                try:
                    await self.execution.resume()
                except errors.InvalidState:
                    pass
                except ConnectionLost:
                    # The server dropped us while we were stopped; the stream
                    # reconnects and sends RESUME once it has reattached.
                    self.resume_pending = True
        finally:
            self._suspending = False


class InputPump:
    """Forward this process's stdin to the execution's stdin, then EOF.

    A daemon thread reads (any file type: pipe, file, /dev/null) so that a
    stdin that never closes cannot keep the process alive at exit. Input is
    sent as UTF-8 text (invalid bytes replaced), which is what ``input`` takes.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def read() -> None:
            while True:
                try:
                    chunk = os.read(self.fd, INPUT_CHUNK_BYTES)
                except OSError:
                    chunk = b""
                future = asyncio.run_coroutine_threadsafe(self._chunks.put(chunk), loop)
                try:
                    future.result()
                except Exception:
                    return  # the loop is gone
                if not chunk:
                    return

        self._thread = threading.Thread(target=read, name="stdin-pump", daemon=True)
        self._thread.start()

    async def forward(self, execution: RemoteExecution) -> None:
        """Send every chunk, retrying while the child's buffer is full; stop
        quietly when the execution no longer takes input."""
        decoder_tail = b""
        while True:
            chunk = await self._chunks.get()
            data = decoder_tail + chunk
            # Keep an incomplete UTF-8 sequence for the next chunk.
            cut = len(data) if not chunk else _utf8_boundary(data)
            decoder_tail = data[cut:]
            text = data[:cut].decode("utf-8", "replace")
            delay = 0.01
            while True:
                try:
                    await execution.send_input(text, eof=not chunk)
                    break
                except errors.LimitReached:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
                except (errors.InvalidState, errors.NotFound, ConnectionLost):
                    return
            if not chunk:
                return


def _utf8_boundary(data: bytes) -> int:
    """The length of ``data`` without a trailing incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 6 else 3 if byte >> 4 == 14 else 4
            return len(data) if need <= back else len(data) - back
    return len(data)
