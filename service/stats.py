"""``server.stats``: the service's figures, pushed to subscribers every interval.

A connection subscribes with ``stats.subscribe {interval_s}``; one task per
subscriber (kept in :class:`StatsHub`, cancelled on unsubscribe, when the
connection goes, and at shutdown) samples :class:`~service.metrics.Metrics`
and offers a ``server.stats`` notification. The frame is *droppable* in the
connection's bounded outbox: a subscriber that does not read loses stats,
never the server's memory. The rates and ``since the last one`` counts are
relative to that subscriber's previous sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from service.protocol import encode, notification

if TYPE_CHECKING:
    from service.logs import ContextAdapter
    from service.metrics import Metrics
    from service.outbox import Outbox
    from service.probes import ProcessReader
    from service.process.supervisor import Supervisor

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Sample:
    """Running totals at one moment: what the next stats are relative to."""

    mono: float
    spawned: int
    completed: int
    output_bytes: int
    dropped_chunks: int
    cpu_seconds: float


class Named(Protocol):
    """A peer, as far as its subscription goes: its id."""

    id: str


@runtime_checkable
class Subscriber(Named, Protocol):
    """A WebSocket connection, as the hub uses it: stats go straight into its
    text outbox (droppable; a stats frame skipped is not an output chunk
    dropped) and failures into its log."""

    outbox: Outbox[str]
    log: ContextAdapter

    def send_text(self, text: str, *, droppable: bool) -> bool: ...


class StatsHub:
    def __init__(self, metrics: Metrics, supervisor: Supervisor, process: ProcessReader) -> None:
        self.metrics = metrics
        self.supervisor = supervisor
        self.process = process
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Every task, including replaced ones still winding down.
        self._all: set[asyncio.Task[None]] = set()

    def sample(self) -> Sample:
        metrics = self.metrics
        return Sample(
            mono=time.monotonic(),
            spawned=metrics.spawned,
            completed=metrics.completed,
            output_bytes=sum(metrics.output_bytes.values()),
            dropped_chunks=metrics.dropped_chunks,
            cpu_seconds=self.process.read().cpu_seconds,
        )

    def stats(self, previous: Sample, now: Sample) -> dict[str, Any]:
        """The ``server.stats`` params between two samples."""
        elapsed = max(now.mono - previous.mono, 1e-9)
        live = self.metrics.live()
        return {
            "connections": live.connections,
            "executions": live.executions,
            "spawned": now.spawned - previous.spawned,
            "completed": now.completed - previous.completed,
            "output_bytes_per_s": round((now.output_bytes - previous.output_bytes) / elapsed, 1),
            "dropped_chunks": now.dropped_chunks - previous.dropped_chunks,
            "rss_bytes": self.process.read().rss_bytes,
            "cpu_share": round((now.cpu_seconds - previous.cpu_seconds) / elapsed, 4),
            "store_bytes": live.store_bytes,
            "store_backlog_bytes": live.store_backlog_bytes,
            "containment": self.supervisor.containment.name,
        }

    # --- subscriptions -----------------------------------------------------------

    def subscribe(self, connection: Subscriber, interval_s: float) -> None:
        """Start (or restart, with the new interval) ``connection``'s stats."""
        self.unsubscribe(connection)
        task = asyncio.create_task(self._run(connection, interval_s), name=f"stats:{connection.id}")
        self._tasks[connection.id] = task
        self._all.add(task)
        task.add_done_callback(self._all.discard)

    def unsubscribe(self, connection: Named) -> bool:
        """Stop ``connection``'s stats; False when it had none."""
        task = self._tasks.pop(connection.id, None)
        if task is None:
            return False
        task.cancel()
        return True

    def subscribed(self, connection: Named) -> bool:
        return connection.id in self._tasks

    async def stop(self) -> None:
        """Cancel every subscription and wait for the tasks to end."""
        tasks = list(self._all)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, connection: Subscriber, interval_s: float) -> None:
        previous = self.sample()
        deadline = previous.mono
        try:
            while not connection.outbox.closed:
                # A fixed cadence: a slow sample does not push the next one later.
                deadline += interval_s
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                now = self.sample()
                frame = encode(notification("server.stats", self.stats(previous, now)))
                previous = now
                # Straight into the outbox, droppable: a stats frame the client
                # has no room for is skipped, and is not an output chunk dropped.
                connection.outbox.offer(frame, droppable=True)
        except Exception:
            connection.log.exception("server.stats failed; subscription ended")
        finally:
            if self._tasks.get(connection.id) is asyncio.current_task():
                del self._tasks[connection.id]
