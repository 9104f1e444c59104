"""Who hears about an execution: its sinks and its observers.

A *sink* is a connection (or an attach holder, or the MCP tools' peer): it
gets every :class:`~service.protocol.Frame` of the executions it watches and
queues it without waiting. :class:`Sinks` fans a frame out and counts, per
sink, the output frames it refused (its ``dropped`` in ``process.completed``).

An observer (:class:`~service.process.execution.ExecutionObserver`: the
store's recorder, an agent run) gets each output :class:`Chunk` as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.protocol import Frame


@dataclass(frozen=True, slots=True)
class Chunk:
    """One ``process.output`` notification's content."""

    seq: int
    stream: str
    data: str
    nbytes: int
    truncated: bool
    ts: float


class Sink(Protocol):
    """Where an execution's notifications go: a connection's outbox."""

    def offer(self, frame: Frame, *, droppable: bool) -> bool: ...


class Sinks:
    """The sinks of one execution, each with the output frames it refused."""

    def __init__(self) -> None:
        self._dropped: dict[Sink, int] = {}

    def add(self, sink: Sink) -> None:
        self._dropped.setdefault(sink, 0)

    def remove(self, sink: Sink) -> None:
        self._dropped.pop(sink, None)

    def __contains__(self, sink: Sink) -> bool:
        return sink in self._dropped

    def dropped_for(self, sink: Sink) -> int:
        return self._dropped.get(sink, 0)

    def send(self, frame: Frame, *, droppable: bool) -> None:
        """Offer ``frame`` to every sink; a droppable one refused counts as dropped."""
        for sink in list(self._dropped):
            if not sink.offer(frame, droppable=droppable) and droppable:
                self._dropped[sink] += 1

    def each(self) -> list[tuple[Sink, int]]:
        """Every sink with its dropped count (a copy: sinks may leave meanwhile)."""
        return list(self._dropped.items())
