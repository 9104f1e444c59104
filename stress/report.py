"""The end-of-run summary: a table per request name, the harness's own
figures, and the gates, printed and optionally written as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from stress.gates import Gate, NameStats, RunFigures
from stress.metrics import Figures


def name_stats(stats: Any) -> list[NameStats]:
    """Locust's per-name statistics (a ``RequestStats``) as plain rows."""
    rows = []
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        if entry.num_requests == 0 and entry.num_failures == 0:
            continue
        rows.append(
            NameStats(
                name=entry.name,
                requests=entry.num_requests,
                failures=entry.num_failures,
                p50_ms=float(entry.get_response_time_percentile(0.5) or 0),
                p95_ms=float(entry.get_response_time_percentile(0.95) or 0),
                max_ms=float(entry.max_response_time or 0),
            )
        )
    return rows


def render(run: RunFigures, figures: Figures, gates: list[Gate], marker: str) -> str:
    """The summary as text, for the terminal and the CI log."""
    lines = ["", "=== cc-executor stress summary ===", ""]
    width = max([len(s.name) for s in run.stats] + [12])
    lines.append(
        f"{'name':<{width}} {'reqs':>7} {'fails':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    )
    for s in run.stats:
        lines.append(
            f"{s.name:<{width}} {s.requests:>7} {s.failures:>6} "
            f"{s.p50_ms:>8.0f} {s.p95_ms:>8.0f} {s.max_ms:>8.0f}"
        )
    lines.append(f"{'total':<{width}} {run.requests:>7} {run.failures:>6}")
    lines.append("")
    peak = "not sampled" if run.peak_rss_bytes is None else f"{run.peak_rss_bytes / 1e6:.1f} MB"
    lines.append(f"server peak RSS: {peak}")
    stream = figures.stream
    if stream.runs:
        lines.append(
            f"streams: {stream.runs} runs, {stream.bytes} bytes, {stream.lines} lines, "
            f"{stream.bytes_per_s / 1e3:.1f} kB/s, {stream.lines_per_s:.0f} lines/s per stream, "
            f"dropped chunks {stream.dropped_chunks}, seq gaps {stream.seq_gaps}, "
            f"max time to first output {stream.first_output_ms_max:.0f} ms"
        )
    for user, reason in sorted(figures.skipped.items()):
        lines.append(f"SKIPPED {user}: {reason}")
    if figures.requests_by_worker:
        workers = ", ".join(f"{w}: {n}" for w, n in sorted(figures.requests_by_worker.items()))
        lines.append(f"requests by worker: {workers}")
    lines.append(f"orphans (marker {marker}): {len(run.orphans)}")
    for orphan in run.orphans:
        lines.append(f"  ORPHAN pid {orphan.pid}: {orphan.cmdline}")
    lines.append("")
    for gate in gates:
        lines.append(f"gate {gate.name:<12} {'PASS' if gate.passed else 'FAIL'}  {gate.detail}")
    verdict = "PASSED" if all(g.passed for g in gates) else "FAILED"
    lines.append(f"stress run {verdict}")
    return "\n".join(lines)


def as_json(run: RunFigures, figures: Figures, gates: list[Gate], marker: str) -> str:
    stream = figures.stream
    document = {
        "passed": all(g.passed for g in gates),
        "gates": [asdict(g) for g in gates],
        "stats": [asdict(s) for s in run.stats],
        "requests": run.requests,
        "failures": run.failures,
        "peak_rss_bytes": run.peak_rss_bytes,
        "orphans": [asdict(o) for o in run.orphans],
        "marker": marker,
        "skipped": figures.skipped,
        "stream": {
            **asdict(stream),
            "bytes_per_s": stream.bytes_per_s,
            "lines_per_s": stream.lines_per_s,
        },
        "requests_by_worker": figures.requests_by_worker,
    }
    return json.dumps(document, indent=2)
