"""What the service counts, and its Prometheus exposition at ``/metrics``.

One :class:`Metrics` per :class:`~service.services.Services`, built at the
composition root and passed down; no module-global registry, so several
servers can live in one process (tests) without sharing figures.

It follows executions as an :class:`~service.process.execution.ExecutionObserver` and
hears about requests, dropped chunks, controls and agent costs through one call
per event. The counters are plain numbers, always kept: ``server.stats``
(:mod:`service.stats`) reads them whether or not Prometheus is on. With
``metrics_enabled`` a :class:`~prometheus_client.CollectorRegistry` of its own
adds the histograms and the library's process collector, and exposes counters
and live gauges through :class:`~service.metrics_collector.ServiceCollector`,
which reads them only when scraped, so the hot path (one call per output chunk)
never takes a lock.

Label sets are bounded: execution states, stream names, control types, method
names the router knows (anything else is ``other``) and error names.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector

from service import errors
from service.metrics_collector import LiveFigures, ServiceCollector
from service.process.state import ExecutionState

if TYPE_CHECKING:
    from service.process.execution import Execution
    from service.process.sinks import Chunk

#: ``outcome`` label of a request that got a result.
OK = "ok"

#: ``outcome`` labels of error responses, by JSON-RPC code.
OUTCOMES = {
    errors.PARSE_ERROR: "parse_error",
    errors.INVALID_REQUEST: "invalid_request",
    errors.METHOD_NOT_FOUND: "method_not_found",
    errors.INVALID_PARAMS: "invalid_params",
    errors.INTERNAL_ERROR: "internal_error",
    errors.LIMIT_REACHED: "limit_reached",
    errors.NOT_ALLOWED: "not_allowed",
    errors.NOT_FOUND: "not_found",
    errors.TIMED_OUT: "timed_out",
    errors.INVALID_STATE: "invalid_state",
    errors.RATE_LIMITED: "rate_limited",
    errors.STORE_ERROR: "store_error",
}

#: The ``method`` label of a request whose method the router does not know:
#: client-chosen strings must not grow the label set.
OTHER_METHOD = "other"

CONTROL_TYPES = ("PAUSE", "RESUME", "CANCEL")

SPAWN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTROL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def outcome_of(code: int | None) -> str:
    """The ``outcome`` label for an error code (None: success)."""
    if code is None:
        return OK
    return OUTCOMES.get(code, "error")


class Histograms:
    """The Prometheus histograms; they exist only with metrics enabled."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "cc_executor_execution_duration_seconds",
            "Wall-clock time from an execution's process start to its end.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.spawn = Histogram(
            "cc_executor_spawn_seconds",
            "Time from an accepted execute request to its process running (process.started).",
            buckets=SPAWN_BUCKETS,
            registry=registry,
        )
        control = Histogram(
            "cc_executor_control_seconds",
            "Time from a control request to its effect: PAUSE every member stopped, "
            "RESUME signalled, CANCEL the execution ended.",
            ["type"],
            buckets=CONTROL_BUCKETS,
            registry=registry,
        )
        self.control = {kind: control.labels(kind) for kind in CONTROL_TYPES}


class Metrics:
    """Counters fed by the service, and their exposition when enabled.

    ``live`` is called when a scrape or a stats sample needs the current
    figures (connections, live executions, store); the services set it once
    they exist.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.live: Callable[[], LiveFigures] = _nothing_live
        self.executions: Counter[str] = Counter()
        self.spawned = 0
        self.completed = 0
        self.output_bytes: dict[str, int] = {"stdout": 0, "stderr": 0}
        self.dropped_chunks = 0
        self.requests: Counter[tuple[str, str]] = Counter()
        self.agent_cost_usd = 0.0
        self.method_names: frozenset[str] = frozenset()
        #: Executions seen running (bounded by the live ones): the first
        #: ``running`` is the spawn, later ones are RESUMEs.
        self._running: set[str] = set()
        #: CANCEL requests waiting for their execution to end, by execution id.
        self._cancels: dict[str, float] = {}
        self.registry: CollectorRegistry | None = None
        self.histograms: Histograms | None = None
        if enabled:
            self.registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=self.registry)
            self.registry.register(ServiceCollector(self))
            self.histograms = Histograms(self.registry)

    # --- ExecutionObserver ----------------------------------------------------

    def on_output(self, execution: Execution, chunk: Chunk) -> None:
        self.output_bytes[chunk.stream] = self.output_bytes.get(chunk.stream, 0) + chunk.nbytes

    def on_transition(self, execution: Execution) -> None:
        state = execution.state
        if state is ExecutionState.RUNNING:
            if execution.id not in self._running:
                self._running.add(execution.id)
                self.spawned += 1
                if self.histograms is not None:
                    self.histograms.spawn.observe(max(0.0, time.time() - execution.created_at))
            return
        if not state.is_final:
            return
        self.completed += 1
        self.executions[state.value] += 1
        ran = execution.id in self._running
        self._running.discard(execution.id)
        cancelled_at = self._cancels.pop(execution.id, None)
        if self.histograms is None:
            return
        if ran:
            self.histograms.duration.observe(execution.duration_s)
        if cancelled_at is not None:
            self.histograms.control["CANCEL"].observe(time.monotonic() - cancelled_at)

    # --- one call per event ---------------------------------------------------

    def request(self, method: str, code: int | None) -> None:
        """A request was answered: with a result (``code`` None) or an error."""
        name = method if method in self.method_names else OTHER_METHOD
        self.requests[(name, outcome_of(code))] += 1

    def dropped_chunk(self) -> None:
        """An output chunk was not delivered live to one client."""
        self.dropped_chunks += 1

    def control_done(self, kind: str, started_mono: float, execution: Execution) -> None:
        """A control request succeeded. PAUSE and RESUME have had their effect;
        CANCEL's is the execution's end, which :meth:`on_transition` times."""
        if kind == "CANCEL":
            if execution.state.is_final:
                self._observe_control(kind, started_mono)
            else:
                self._cancels[execution.id] = started_mono
            return
        self._observe_control(kind, started_mono)

    def agent_cost(self, cost_usd: float) -> None:
        if cost_usd > 0:
            self.agent_cost_usd += cost_usd

    def _observe_control(self, kind: str, started_mono: float) -> None:
        if self.histograms is not None and kind in self.histograms.control:
            self.histograms.control[kind].observe(time.monotonic() - started_mono)


def _nothing_live() -> LiveFigures:
    return LiveFigures(0, {}, None, None)
