"""The bounded outbound queue of one connection.

Producers (executions, the dispatcher) never wait on a client: they ``offer``
already-encoded frames. Output chunks are *droppable*: when the bytes waiting
for this client would pass ``max_pending_bytes``, the chunk is refused and the
caller counts it as dropped. Responses and lifecycle notifications are not
droppable; they are small, and a client that lets them pile up past
``hard_limit_bytes`` (it sends but never reads) is disconnected instead of
being allowed to grow the server's memory.

A replay (``attach``) uses :meth:`put` instead, which waits for room, so a
slow reader slows its own replay and nothing else.

A WebSocket connection queues text; a peer inside the server queues
:class:`~service.protocol.Frame` objects (read, not parsed). Either way an
item weighs its ``len``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sized
from typing import Generic, TypeVar

#: What an outbox holds: encoded text, or frames that know their text's length.
F = TypeVar("F", bound=Sized)


class OutboxClosed(Exception):
    """The connection is gone; nothing more can be sent."""


class Outbox(Generic[F]):
    def __init__(self, max_pending_bytes: int, hard_limit_factor: int = 4) -> None:
        self.max_pending_bytes = max_pending_bytes
        self.hard_limit_bytes = max_pending_bytes * hard_limit_factor
        self.pending_bytes = 0
        self.dropped_frames = 0
        self.overflowed = False
        self._frames: deque[F] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, frame: F, *, droppable: bool) -> bool:
        """Queue ``frame`` without waiting; False when it was not queued."""
        if self._closed:
            return False
        size = len(frame)
        # The budget is strict: a chunk larger than all of it is never sent live
        # (``attach`` replays it from the transcript), so memory stays bounded.
        if droppable and self.pending_bytes + size > self.max_pending_bytes:
            self.dropped_frames += 1
            return False
        if not droppable and self.pending_bytes + size > self.hard_limit_bytes:
            # The client has stopped reading even its responses: give up on it.
            self.overflowed = True
            self.close()
            return False
        self._push(frame, size)
        return True

    async def put(self, frame: F) -> None:
        """Queue ``frame``, waiting while the queue is full. Raises OutboxClosed."""
        while not self._closed and self.pending_bytes + len(frame) > self.max_pending_bytes:
            if not self._frames:
                break  # a single frame larger than the limit still goes out alone
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise OutboxClosed
        self._push(frame, len(frame))

    def _push(self, frame: F, size: int) -> None:
        self._frames.append(frame)
        self.pending_bytes += size
        self._ready.set()

    async def get(self) -> F:
        """The next frame to send; raises OutboxClosed once closed and empty.

        Cancelling this call is safe: no frame is taken unless it is returned.
        """
        while not self._frames:
            if self._closed:
                raise OutboxClosed
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.pending_bytes -= len(frame)
        if self.pending_bytes <= self.max_pending_bytes // 2:
            self._room.set()
        return frame

    def close(self) -> None:
        """Stop accepting frames; ``get`` drains what is queued, then raises."""
        self._closed = True
        self._ready.set()
        self._room.set()
