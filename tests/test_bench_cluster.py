"""The cluster benchmark runs end to end (tiny sizes): a throwaway PostgreSQL
and two nodes start, every workload runs, the table prints and the JSON file
holds the figures, and each cross-node replay was whole (seq 1..N, every line
once). The figures themselves are not judged: benchmarks are not timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.pg
@pytest.mark.timeout(120)
def test_cluster_bench_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "stress.bench.cluster"),
            *("--rounds", "2", "--attach-lines", "300", "--pause-rounds", "3"),
            *("--sessions", "6", "--lines", "500", "--spread-rounds", "1"),
            *("--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "remote PAUSE" in proc.stdout and "two nodes" in proc.stdout
    figures = json.loads(out.read_text())
    attach = figures["attach"]
    assert attach["problems"] == []
    assert attach["remote"]["n"] == attach["local"]["n"] == 2
    assert attach["remote"]["p50_ms"] > 0
    for side in ("local", "remote"):
        for kind in ("PAUSE", "RESUME"):
            assert figures["pause"][side][kind]["n"] == 3
    spread = figures["spread"]
    for key in ("one", "two"):
        (run,) = spread[key]
        assert run["dropped_chunks"] == 0 and run["sessions_missing_lines"] == 0
        assert run["lines_per_s"] > 0
    assert spread["two"][0]["nodes"] == 2
    assert figures["machine"]["nproc"] >= 1
