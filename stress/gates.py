"""The gates that fail a run, as pure functions of its figures.

:func:`evaluate` takes what the run measured (:class:`RunFigures`) and the
bounds (:class:`Bounds`) and returns one :class:`Gate` per rule; the run
fails when any gate failed. No I/O and no Locust here, so every rule is
tested on plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The request name whose p95 is bounded; so is every ``control (...)`` name
#: (ClusterUser's ``control (other node)``), each on its own.
CONTROL = "control"


@dataclass(frozen=True)
class NameStats:
    """One request name's line of the statistics table."""

    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True)
class Orphan:
    pid: int
    cmdline: str


@dataclass(frozen=True)
class Bounds:
    max_fail_ratio: float = 0.01
    control_p95_ms: float = 2000.0
    max_rss_mb: float = 100.0


@dataclass
class RunFigures:
    stats: list[NameStats]
    peak_rss_bytes: int | None
    orphans: list[Orphan] = field(default_factory=list)
    #: Exceptions the users' tasks raised (Locust's "errors"), counted once per kind.
    task_errors: int = 0

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.stats)

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.stats)


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str


def evaluate(figures: RunFigures, bounds: Bounds) -> list[Gate]:
    """Every gate of the run, passed or not."""
    gates = []
    total, failed = figures.requests, figures.failures
    ratio = failed / total if total else 0.0
    gates.append(
        Gate("requests", total > 0, f"{total} requests" if total else "no request was made")
    )
    gates.append(
        Gate(
            "failures",
            total > 0 and ratio <= bounds.max_fail_ratio,
            f"{failed}/{total} failed ({ratio:.2%}, bound {bounds.max_fail_ratio:.2%})",
        )
    )
    gates.append(
        Gate("task errors", figures.task_errors == 0, f"{figures.task_errors} kinds of exception")
    )
    controls = [
        s
        for s in figures.stats
        if s.requests and (s.name == CONTROL or s.name.startswith(CONTROL + " ("))
    ]
    if not controls:
        gates.append(Gate("control p95", True, "no control request in this run"))
    for control in controls:
        gates.append(
            Gate(
                f"{control.name} p95",
                control.p95_ms <= bounds.control_p95_ms,
                f"p95 {control.p95_ms:.0f} ms (bound {bounds.control_p95_ms:.0f} ms)",
            )
        )
    if bounds.max_rss_mb <= 0:
        gates.append(Gate("server RSS", True, "not checked (bound 0)"))
    elif figures.peak_rss_bytes is None:
        gates.append(
            Gate(
                "server RSS",
                False,
                "not sampled: give --server-pid, or --token for /metrics and /health",
            )
        )
    else:
        peak_mb = figures.peak_rss_bytes / 1e6
        gates.append(
            Gate(
                "server RSS",
                peak_mb <= bounds.max_rss_mb,
                f"peak {peak_mb:.1f} MB (bound {bounds.max_rss_mb:.0f} MB)",
            )
        )
    orphans = figures.orphans
    gates.append(
        Gate(
            "orphans",
            not orphans,
            "none" if not orphans else "; ".join(f"{o.pid}: {o.cmdline}" for o in orphans),
        )
    )
    return gates


def passed(gates: list[Gate]) -> bool:
    return all(gate.passed for gate in gates)
