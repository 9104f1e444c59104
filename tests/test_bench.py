"""The benchmark script runs end to end (tiny sizes): both servers start, every
workload runs on both, the table prints and the JSON file holds the figures.
The figures themselves are not judged here: benchmarks are not timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("seq", "yes", "true", "pause", "idle")


@pytest.mark.timeout(60)
def test_bench_runs_end_to_end(tmp_path: Path, marker: dict[str, str]) -> None:
    out = tmp_path / "results"
    ((name, value),) = marker.items()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stress.bench",
            "--rounds",
            "1",
            "--seq-lines",
            "2000",
            "--seconds",
            "0.5",
            "--yes-rounds",
            "1",
            "--true-runs",
            "3",
            "--concurrent",
            "3",
            "--pause-executions",
            "2",
            "--pause-samples",
            "4",
            "--pause-rate",
            "200",
            "--idle",
            "5",
            "--env",
            f"{name}={value}",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bench" in proc.stdout and "cc better by" in proc.stdout
    [result_file] = out.glob("bench-*.json")
    result = json.loads(result_file.read_text())
    assert set(result["samples"]) == set(WORKLOADS)
    assert result["machine"]["nproc"] >= 1
    assert result["cc_executor_settings"]["max_executions_per_connection"] >= 2

    seq = result["samples"]["seq"]
    assert all(s["complete"] for s in seq["websocketd"] + seq["cc-executor"]), seq
    assert all(s["dropped_chunks"] == 0 for s in seq["cc-executor"])
    yes = result["samples"]["yes"]
    assert yes["websocketd"][0]["lines"] > 0 and yes["cc-executor"][0]["lines"] > 0
    true = result["samples"]["true"]
    assert all(s["completed"] == 3 for s in true["sequential"]["cc-executor"])
    pause = result["samples"]["pause"]
    for case in ("streaming", "sleeping"):
        assert len(pause[case]["latencies_s"]) == 4
        assert pause[case]["not_stopped"] == 0
    assert pause["streaming"]["lines"] > 0
    idle = result["samples"]["idle"]
    assert idle["websocketd"]["connections"] == idle["cc-executor"]["connections"] == 5
    metrics = {(row["bench"], row["metric"]) for row in result["rows"]}
    assert ("seq 1 2000", "connect to last line") in metrics
