"""The counters and live gauges of :class:`~service.metrics.Metrics`, as
Prometheus families built at scrape time.

A custom collector rather than ``Counter``/``Gauge`` objects: the service
updates plain numbers on its hot path (one per output chunk) and this reads
them only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.process.state import ExecutionState

#: Every way an execution of this server ends, reported (at 0) before it first
#: happens so that rates over a fresh server are defined. (``lost`` is only
#: ever set by restart recovery on a previous server's executions.)
FINAL = tuple(
    state.value for state in ExecutionState if state.is_final and state is not ExecutionState.LOST
)
LIVE = tuple(state.value for state in ExecutionState if state.is_live)


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What the service holds right now, read when scraped or sampled."""

    connections: int
    executions: dict[str, int]
    store_bytes: int | None
    store_backlog_bytes: int | None


class Counts(Protocol):
    """What the collector reads (:class:`~service.metrics.Metrics`)."""

    live: Callable[[], LiveFigures]
    executions: Counter[str]
    output_bytes: dict[str, int]
    dropped_chunks: int
    requests: Counter[tuple[str, str]]
    agent_cost_usd: float


class ServiceCollector(Collector):
    def __init__(self, metrics: Counts) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        # Names only (no samples): lets the registry refuse a duplicate name early.
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        metrics = self.metrics
        live = metrics.live() if with_samples else None

        executions = CounterMetricFamily(
            "cc_executor_executions",
            "Executions ended, by final status.",
            labels=["status"],
        )
        output = CounterMetricFamily(
            "cc_executor_output_bytes",
            "Bytes read from executions' stdout and stderr.",
            labels=["stream"],
        )
        dropped = CounterMetricFamily(
            "cc_executor_output_dropped_chunks",
            "Output chunks not delivered live to a slow client (attach replays them).",
        )
        requests = CounterMetricFamily(
            "cc_executor_requests",
            "JSON-RPC requests answered, by method and outcome (ok or the error's name).",
            labels=["method", "outcome"],
        )
        cost = CounterMetricFamily(
            "cc_executor_agent_cost_usd",
            "Cost reported by Claude Code agent runs, in US dollars.",
        )
        connections = GaugeMetricFamily("cc_executor_connections", "Open WebSocket connections.")
        executions_live = GaugeMetricFamily(
            "cc_executor_executions_live", "Live executions, by state.", labels=["state"]
        )
        backlog = GaugeMetricFamily(
            "cc_executor_store_backlog_bytes",
            "Output bytes queued for the store writer, not yet on disk.",
        )
        store_bytes = GaugeMetricFamily(
            "cc_executor_store_bytes",
            "Size of the store: SQLite database and WAL on disk, or its PostgreSQL tables.",
        )
        if live is not None:
            for status in FINAL:
                executions.add_metric([status], metrics.executions.get(status, 0))
            for stream, nbytes in metrics.output_bytes.items():
                output.add_metric([stream], nbytes)
            dropped.add_metric([], metrics.dropped_chunks)
            for (method, outcome), count in sorted(metrics.requests.items()):
                requests.add_metric([method, outcome], count)
            cost.add_metric([], metrics.agent_cost_usd)
            connections.add_metric([], live.connections)
            for state in LIVE:
                executions_live.add_metric([state], live.executions.get(state, 0))
            backlog.add_metric([], live.store_backlog_bytes or 0)
            store_bytes.add_metric([], live.store_bytes or 0)
        yield from (executions, output, dropped, requests, cost)
        yield from (connections, executions_live, backlog, store_bytes)
