"""A started child process, for asyncio.

:class:`Child` wraps what :class:`~service.process.launcher.Launcher` started:
its pipes as streams, and its exit as a pidfd event (no SIGCHLD handler, no
polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from typing import Any

from service.errors import InvalidState, LimitReached
from service.process.report import Started
from service.process.sibling import Leader, Sibling

#: Bytes of input that may wait for a child to read them before ``input`` is refused.
STDIN_BUFFER_LIMIT = 1024 * 1024


def _pipe_file(fd: int, mode: str, loop: asyncio.AbstractEventLoop) -> Any:
    """A file object for a pipe end handed to the loop.

    uvloop's libuv closes the fd itself when the transport closes, and uvloop
    then closes the file object too: a second close of the same number, which
    can hit an fd the spawn thread has just opened. Under uvloop the file
    object therefore must not own the fd; asyncio's own transports close it
    once, through the file object.
    """
    owns = not type(loop).__module__.startswith("uvloop")
    return open(fd, mode, buffering=0, closefd=owns)


class Child:
    """A started child process, its pipes connected to the event loop."""

    def __init__(self, started: Started, limit: int, leader: Leader | None = None) -> None:
        self._started = started
        #: The user's program: the started process, or the shim's clone of it.
        self._popen: Leader = leader or started.popen
        self.pid = self._popen.pid
        self.stdout = asyncio.StreamReader(limit=limit)
        self.stderr = asyncio.StreamReader(limit=limit)
        self.stdin: asyncio.StreamWriter | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd: int | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self._unconnected = [
            fd for fd in (started.stdout_fd, started.stderr_fd, started.stdin_fd) if fd is not None
        ]

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        started = self._started
        for fd, reader in ((started.stdout_fd, self.stdout), (started.stderr_fd, self.stderr)):
            transport, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader),
                _pipe_file(fd, "rb", loop),
            )
            self._unconnected.remove(fd)
            self._transports.append(transport)
        if started.stdin_fd is not None:
            writer, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, _pipe_file(started.stdin_fd, "wb", loop)
            )
            self._unconnected.remove(started.stdin_fd)
            self._transports.append(writer)
            self.stdin = asyncio.StreamWriter(writer, protocol, None, loop)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:
            # No pidfd (old kernel, not Linux): one thread waits instead.
            wait = loop.run_in_executor(None, self._popen.wait)
            wait.add_done_callback(lambda done: self._set_exit(done.result()))
        else:
            loop.add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        assert self._pidfd is not None
        returncode = self._popen.poll()
        if returncode is None:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._set_exit(returncode)

    def _set_exit(self, returncode: int) -> None:
        if not self._exited.done():
            self._exited.set_result(returncode)

    def write_input(self, payload: bytes, eof: bool) -> int:
        """Write ``payload`` to stdin without waiting (then close it on ``eof``);
        its length. InvalidState once stdin is closed, LimitReached while more
        than :data:`STDIN_BUFFER_LIMIT` bytes wait for the child to read them."""
        stdin = self.stdin
        if stdin is None or stdin.is_closing():
            raise InvalidState("stdin is closed")
        if stdin.transport.get_write_buffer_size() > STDIN_BUFFER_LIMIT:
            raise LimitReached("stdin buffer full: the process is not reading its input")
        try:
            if payload:
                stdin.write(payload)
            if eof:
                stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            raise InvalidState("stdin is closed: the process stopped reading") from None
        return len(payload)

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal). Safe to cancel."""
        return await asyncio.shield(self._exited)

    def close(self) -> None:
        """Close every pipe and stop watching; after the readers are done."""
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for fd in self._unconnected:
            os.close(fd)
        self._unconnected.clear()
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if isinstance(self._popen, Sibling):
            self._popen.close()  # its pidfd, even when it was never reaped
