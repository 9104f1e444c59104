"""Reading one pipe of a child into batches of whole lines.

:class:`OutputStream` reads large chunks from a pipe, cuts them into whole
lines (:class:`~service.lines.LineSplitter`) and batches the lines into one
emission per flush: as soon as ``flush_bytes`` are pending, or
``flush_interval_s`` after the first pending byte. A cut (truncated) line is
always an emission of its own, so its flag belongs to it alone.

Emissions go to a plain callback, synchronously, so the order of chunks is the
order of ``emit`` calls. While the execution is paused the stream neither
flushes nor reads: what was read before the pause waits in the batch and goes
out on resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from service.lines import LineSplitter, Piece

Emit = Callable[[str, bytes, bool], None]


class OutputStream:
    def __init__(
        self,
        name: str,
        emit: Emit,
        *,
        max_line_bytes: int,
        flush_bytes: int,
        flush_interval_s: float,
        read_chunk_bytes: int,
        gate: asyncio.Event,
        flow: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.bytes_read = 0
        #: How many times the store's flow control held this reader.
        self.holds = 0
        self._emit = emit
        self._splitter = LineSplitter(max_line_bytes)
        self._flush_bytes = flush_bytes
        self._flush_interval_s = flush_interval_s
        self._read_chunk_bytes = read_chunk_bytes
        self._gate = gate
        self._flow = flow
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def truncated_lines(self) -> int:
        return self._splitter.truncated_lines

    async def pump(self, reader: asyncio.StreamReader) -> None:
        """Read until EOF, then emit what is left. Cancelling it loses nothing
        already read: :meth:`finish` still emits it."""
        while True:
            if not self._gate.is_set():
                await self._gate.wait()
            if self._flow is not None and not self._flow.is_set():
                self.holds += 1
                await self._flow.wait()
            data = await reader.read(self._read_chunk_bytes)
            if not data:
                break
            self.bytes_read += len(data)
            for piece in self._splitter.feed(data):
                self._add(piece)

    def finish(self) -> None:
        """End of stream: emit the unfinished last line and everything pending."""
        for piece in self._splitter.finish():
            self._add(piece)
        self.flush(force=True)

    def _add(self, piece: Piece) -> None:
        if piece.truncated:
            self.flush(force=True)
            self._emit(self.name, piece.data, True)
            return
        self._pending.append(piece.data)
        self._pending_size += len(piece.data)
        if self._pending_size >= self._flush_bytes:
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._flush_interval_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Emit the pending batch, unless paused (``force`` ignores the pause)."""
        if not force and not self._gate.is_set():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self._emit(self.name, data, False)


class Pumps:
    """The two sibling reader tasks of one child: stdout and stderr."""

    def __init__(
        self,
        streams: dict[str, OutputStream],
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        name: str,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._streams = streams
        self._log = log
        self._tasks = [
            asyncio.create_task(streams["stdout"].pump(stdout), name=f"{name}:out"),
            asyncio.create_task(streams["stderr"].pump(stderr), name=f"{name}:err"),
        ]

    async def drained(self, timeout_s: float, flow: asyncio.Event | None = None) -> bool:
        """Wait until both pipes reached EOF; False once ``timeout_s`` passed
        with the readers free to read and the pipes still open.

        Time that ``flow`` (the store's flow control) holds the readers does not
        count: what the pipes still hold then is output the client is owed, held
        back only to bound memory, and closing the pipes would lose it silently.
        A window in which the readers were held at any moment is started again.
        """
        if all(task.done() for task in self._tasks):
            return True  # the usual case: EOF came with the exit (no timer, no hop)
        while True:
            holds = self._holds()
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            if not pending:
                return True
            if flow is None or (flow.is_set() and self._holds() == holds):
                return False
            if not flow.is_set():
                waiter = asyncio.ensure_future(flow.wait())
                try:
                    await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()

    def _holds(self) -> int:
        return sum(stream.holds for stream in self._streams.values())

    async def stop(self) -> None:
        """Cancel both readers and emit what they still hold."""
        running = [task for task in self._tasks if not task.done()]
        for task in running:
            task.cancel()
        if running:  # readers that are done already cost no wait
            await asyncio.gather(*running, return_exceptions=True)
        for task in self._tasks:
            failure = None if task.cancelled() else task.exception()
            if isinstance(failure, Exception):
                self._log.error("output reader failed", exc_info=failure)
        for stream in self._streams.values():
            stream.finish()
