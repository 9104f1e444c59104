"""Figures Locust's request statistics do not hold: skipped users, stream
throughput and drops, and which worker reported how many requests.

Each process keeps one :data:`FIGURES`; a worker ships and resets its own with
every report to the master (``events.report_to_master``), and the master adds
them up (``events.worker_report``), the way Locust merges its own stats.
Greenlets never switch inside these functions, so no lock is needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_KEY = "ccx_stress"


@dataclass
class StreamFigures:
    """Totals over every finished stream run."""

    runs: int = 0
    bytes: int = 0
    lines: int = 0
    seconds: float = 0.0
    dropped_chunks: int = 0
    seq_gaps: int = 0
    first_output_ms_max: float = 0.0

    def add(self, other: StreamFigures) -> None:
        self.runs += other.runs
        self.bytes += other.bytes
        self.lines += other.lines
        self.seconds += other.seconds
        self.dropped_chunks += other.dropped_chunks
        self.seq_gaps += other.seq_gaps
        self.first_output_ms_max = max(self.first_output_ms_max, other.first_output_ms_max)

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds else 0.0

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


@dataclass
class Figures:
    skipped: dict[str, str] = field(default_factory=dict)
    stream: StreamFigures = field(default_factory=StreamFigures)
    requests_by_worker: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.skipped.clear()
        self.stream = StreamFigures()
        self.requests_by_worker.clear()


FIGURES = Figures()


def record_skip(user: str, reason: str) -> None:
    FIGURES.skipped.setdefault(user, reason)


def record_stream(
    *, nbytes: int, lines: int, seconds: float, dropped: int, gaps: int, first_output_ms: float
) -> None:
    FIGURES.stream.add(
        StreamFigures(
            runs=1,
            bytes=nbytes,
            lines=lines,
            seconds=seconds,
            dropped_chunks=dropped,
            seq_gaps=gaps,
            first_output_ms_max=first_output_ms,
        )
    )


def to_master(data: dict[str, Any]) -> None:
    """``report_to_master`` listener on a worker: ship and reset its figures."""
    data[REPORT_KEY] = {"skipped": dict(FIGURES.skipped), "stream": asdict(FIGURES.stream)}
    FIGURES.stream = StreamFigures()


def from_worker(client_id: str, data: dict[str, Any]) -> None:
    """``worker_report`` listener on the master: add a worker's figures."""
    requests = sum(int(entry.get("num_requests", 0)) for entry in data.get("stats", []))
    if requests:
        FIGURES.requests_by_worker[client_id] = (
            FIGURES.requests_by_worker.get(client_id, 0) + requests
        )
    shipped = data.get(REPORT_KEY)
    if not isinstance(shipped, dict):
        return
    for user, reason in (shipped.get("skipped") or {}).items():
        record_skip(user, reason)
    FIGURES.stream.add(StreamFigures(**shipped.get("stream", {})))
