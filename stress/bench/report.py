"""Statistics, the printed table and the JSON file of a benchmark run."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 300 samples is the 297th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One line of the table. ``advantage`` is how many times better
    cc-executor is (websocketd/cc-executor for costs, the inverse for rates);
    ``target`` is the advantage (or, without websocketd, the limit) to meet."""

    bench: str
    metric: str
    unit: str
    websocketd: float | None
    cc_executor: float
    advantage: float | None
    target: str
    met: bool | None
    note: str = ""


def cost_row(
    bench: str, metric: str, unit: str, wsd: float, cc: float, target: float | None, note: str = ""
) -> Row:
    """A figure where less is better (seconds, CPU, bytes)."""
    advantage = wsd / cc if cc > 0 else math.inf
    met = None if target is None else advantage >= target
    label = "" if target is None else f">= {target:g}x"
    return Row(bench, metric, unit, wsd, cc, advantage, label, met, note)


def rate_row(
    bench: str, metric: str, unit: str, wsd: float, cc: float, target: float | None, note: str = ""
) -> Row:
    """A figure where more is better (lines/s)."""
    advantage = cc / wsd if wsd > 0 else math.inf
    met = None if target is None else advantage >= target
    label = "" if target is None else f">= {target:g}x"
    return Row(bench, metric, unit, wsd, cc, advantage, label, met, note)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (readable as is on a terminal)."""
    header = ["bench", "metric", "websocketd", "cc-executor", "cc better by", "target", "met"]
    lines = [header]
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        advantage = "-" if row.advantage is None else f"{row.advantage:.2f}x"
        lines.append(
            [
                row.bench,
                f"{row.metric} ({row.unit})" if row.unit else row.metric,
                _fmt(row.websocketd),
                _fmt(row.cc_executor),
                advantage,
                row.target or "-",
                met + (f" ({row.note})" if row.note else ""),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            out.append("| " + " | ".join("-" * width for width in widths) + " |")
    return "\n".join(out)


def _command_output(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    websocketd = _command_output(["websocketd", "--version"]).splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "websocketd": websocketd[0] if websocketd else "",
        "loadavg": os.getloadavg(),
    }


def write_json(out_dir: Path, payload: dict[str, Any], rows: Sequence[Row]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out_dir / f"bench-{stamp}.json"
    document = {**payload, "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
