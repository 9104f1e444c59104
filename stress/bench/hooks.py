"""``python -m stress.bench.hooks``: what the metrics hooks cost per event.

The A/B bench (``stress.bench.ab``) measures whole workloads, and on a shared
machine its noise is larger than the hooks' cost; this times the hooks alone:
``on_output`` once per output chunk, and per execution its first ``running``
and its end plus the request count, with metrics on and off (the plain
counters that ``server.stats`` reads are kept either way).
"""

from __future__ import annotations

import sys
import time
import timeit

from service.metrics import Metrics
from service.process.execution import Chunk
from service.process.state import ExecutionState


class FakeExecution:
    """What the observer reads of an execution."""

    def __init__(self, number: int) -> None:
        self.id = str(number)
        self.state = ExecutionState.RUNNING
        self.created_at = time.time()
        self.duration_s = 0.01


def measure(enabled: bool, chunks: int = 200_000, executions: int = 50_000) -> tuple[float, float]:
    """Seconds per output chunk, and per execution (start, end, request)."""
    metrics = Metrics(enabled)
    chunk = Chunk(1, "stdout", "", 65536, False, 0.0)
    execution = FakeExecution(0)
    per_chunk = (
        timeit.timeit(lambda: metrics.on_output(execution, chunk), number=chunks)  # type: ignore[arg-type]
        / chunks
    )
    counter = iter(range(1, executions + 1))

    def lifecycle() -> None:
        one = FakeExecution(next(counter))
        metrics.on_transition(one)  # type: ignore[arg-type]
        one.state = ExecutionState.COMPLETED
        metrics.on_transition(one)  # type: ignore[arg-type]
        metrics.request("execute", None)

    baseline = timeit.timeit(lambda: FakeExecution(0), number=executions) / executions
    per_execution = timeit.timeit(lifecycle, number=executions) / executions - baseline
    return per_chunk, per_execution


def main() -> int:
    for enabled in (True, False):
        # The least of five, as timeit advises: the rest is other load.
        runs = [measure(enabled) for _ in range(5)]
        per_chunk = min(run[0] for run in runs)
        per_execution = min(run[1] for run in runs)
        print(
            f"metrics_enabled={str(enabled).lower()}: {per_chunk * 1e9:.0f} ns per output chunk, "
            f"{per_execution * 1e6:.2f} us per execution (running, end, request)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
