"""What asking clients for tool permissions costs, measured against a real server.

Runs fake-claude agents in one project, alternating two kinds of run:

- ``approvals``: ``fake:permission=Bash`` with ``approvals: "clients"``; the
  client allows each request the moment its ``agent.permission`` arrives.
- ``baseline``: the default scenario (one tool round, no permission asked).

For each approval run it records: ``ask`` (``agent.execute`` sent to
``agent.permission`` received: the CLI starting, its MCP client connecting
and calling ``approve``, the server notifying), ``answer`` (``agent.decide``
sent to the ``tool_result`` event received: the decision travelling back to
the child over its pending HTTP request, the child printing) and ``total``
(to ``process.completed``). Medians and p90 are printed, and the ratio of the
median totals. The machine is shared: figures are indicative.

    .venv/bin/python -m stress.approvals_bench [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from service.client import ExecutorClient, RemoteExecution
from tests.utils import start_server

FAKE_CLAUDE = str(Path(sys.executable).with_name("fake-claude"))
RUN_TIMEOUT_S = 60


async def approval_run(client: ExecutorClient, project_id: str) -> dict[str, float]:
    started_at = time.perf_counter()
    started = await client.call(
        "agent.execute",
        {"project_id": project_id, "prompt": "fake:permission=Bash", "approvals": "clients"},
    )
    execution = RemoteExecution(client, started["execution_id"], started)
    while True:
        message = await client.notifications.get()
        if message["method"] == "agent.permission":
            break
    asked_at = time.perf_counter()
    await client.call(
        "agent.decide", {"request_id": message["params"]["request_id"], "behavior": "allow"}
    )
    answered_at = 0.0
    async for note in execution.events():
        event = note["params"].get("event") or {}
        if note["method"] == "agent.event" and event.get("type") == "user" and not answered_at:
            answered_at = time.perf_counter()
    done_at = time.perf_counter()
    return {
        "ask": asked_at - started_at,
        "answer": answered_at - asked_at,
        "total": done_at - started_at,
    }


async def baseline_run(client: ExecutorClient, project_id: str) -> dict[str, float]:
    started_at = time.perf_counter()
    started = await client.call("agent.execute", {"project_id": project_id, "prompt": "hello"})
    await RemoteExecution(client, started["execution_id"], started).wait(RUN_TIMEOUT_S)
    return {"total": time.perf_counter() - started_at}


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


async def measure(url: str, root: Path, runs: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"ask": [], "answer": [], "total": [], "baseline": []}
    (root / "bench").mkdir()
    async with ExecutorClient(url) as client:
        project = await client.call(
            "project.create", {"name": "bench", "path": str(root / "bench")}
        )
        project_id = project["project_id"]
        for _ in range(runs):
            timed = await asyncio.wait_for(approval_run(client, project_id), RUN_TIMEOUT_S)
            for key, value in timed.items():
                figures[key].append(value)
            base = await asyncio.wait_for(baseline_run(client, project_id), RUN_TIMEOUT_S)
            figures["baseline"].append(base["total"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each kind (1 to 100)")
    args = parser.parse_args()
    runs = max(1, min(100, args.runs))
    with tempfile.TemporaryDirectory(prefix="ccx-approvals-bench-") as scratch:
        base = Path(scratch)
        (base / "root").mkdir()
        (base / "data").mkdir()
        settings = {
            "claude_bin": FAKE_CLAUDE,
            "project_roots": [str(base / "root")],
        }
        server = start_server(base / "data", settings)
        try:
            figures = asyncio.run(measure(server.url, base / "root", runs))
        finally:
            server.stop()
    print(f"{runs} runs of each kind (shared, noisy machine: indicative figures)")
    print(f"{'figure':<34} {'median s':>9} {'p90 s':>9}")
    labels = {
        "ask": "execute -> agent.permission",
        "answer": "agent.decide -> tool_result",
        "total": "approval run, execute -> completed",
        "baseline": "baseline run, execute -> completed",
    }
    for key, label in labels.items():
        values = figures[key]
        print(f"{label:<34} {statistics.median(values):>9.3f} {p90(values):>9.3f}")
    ratio = statistics.median(figures["total"]) / statistics.median(figures["baseline"])
    print(f"median approval run / median baseline run: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
