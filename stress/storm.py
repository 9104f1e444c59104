"""``python -m stress.storm``: fork-heavy sessions that end at random (issue #13).

N sessions each run ``sleep 1000 & (sleep 1000 &) ; while :; do echo x;
sleep 0.01; done`` (a busy build: about 100 short processes a second, one
background child and one double-forked daemon), stream for 0.5 to 2 s, then
cancel, pause then cancel, close the connection, or drop it without a close
frame, at random. The server runs with ``detach_grace_s=2`` and connection and
execution limits of N+50.

Printed (and written as JSON with ``--json``): p50/p99 of the answers to
``execute`` and to ``control`` (PAUSE, CANCEL), how many requests got no
answer within ``--answer-timeout-s``, and the time from the storm's end (the
last session's action) until the last process of every tree is gone.

Bounded: every wait has a deadline, the run stops by itself, loopback only.
``--server-src DIR`` runs the server from another checkout (``git archive
main``) for a before/after comparison in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from service.client import ExecutorClient, RemoteExecution
from service.process import procfs
from stress.bench.report import percentile
from stress.bench.servers import CcExecutorServer, cpu_seconds

TREE = "sleep 1000 & (sleep 1000 &) ; while :; do echo x; sleep 0.01; done"
ACTIONS = ("cancel", "pause_cancel", "close", "drop")
MARKER_NAME = "CCX_STORM_MARKER"
#: How long the storm waits for the last process to go before it gives up.
GONE_LIMIT_S = 120.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stress.storm", description=__doc__)
    add = parser.add_argument
    add("--sessions", type=int, default=100)
    add("--seed", type=int, default=1)
    add("--answer-timeout-s", type=float, default=10.0)
    add(
        "--workers",
        type=int,
        default=2,
        help="client processes sharing the sessions (one Python client cannot "
        "decode 200 streams on a loaded machine without becoming the bottleneck)",
    )
    add("--cc-setting", action="append", default=[], metavar="NAME=VALUE")
    add("--server-src", help="run the server from this source tree (PYTHONPATH)")
    add("--json", help="write the figures to this file")
    return parser.parse_args(argv)


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"execute": [], "control": []}
        self.unanswered: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.last_action = 0.0

    async def timed(self, kind: str, call: Any, timeout_s: float) -> Any:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(call, timeout_s)
        except TimeoutError:
            self.unanswered[kind] += 1
            return None
        except Exception as exc:  # an answer, but an error: counted, with its name
            self.latency[kind].append(time.monotonic() - started)
            self.errors[f"{kind}:{type(exc).__name__}"] += 1
            return None
        self.latency[kind].append(time.monotonic() - started)
        return result


async def session(
    url: str, env: dict[str, str], rng: random.Random, tally: Tally, timeout_s: float
) -> None:
    client = ExecutorClient(url, open_timeout_s=timeout_s)
    try:
        await client.connect()
    except Exception as exc:
        tally.errors[f"connect:{type(exc).__name__}"] += 1
        return
    try:
        execution: RemoteExecution | None = await tally.timed(
            "execute", client.execute(argv=["sh", "-c", TREE], env=env), timeout_s
        )
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        action = rng.choice(ACTIONS)
        tally.actions[action] += 1
        if execution is not None and action in ("cancel", "pause_cancel"):
            if action == "pause_cancel":
                await tally.timed("control", execution.pause(), timeout_s)
            await tally.timed("control", execution.cancel(), timeout_s)
            tally.last_action = max(tally.last_action, time.monotonic())
            with contextlib.suppress(Exception):
                await execution.wait(timeout_s)
        elif action == "drop":
            client.websocket.transport.abort()
            tally.last_action = max(tally.last_action, time.monotonic())
        else:
            tally.last_action = max(tally.last_action, time.monotonic())
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2)


def marked(value: str) -> list[int]:
    return procfs.pids_with_env(f"{MARKER_NAME}={value}".encode())


async def run_sessions(
    url: str, env: dict[str, str], seed: float, count: int, timeout_s: float
) -> dict[str, Any]:
    """One client process's share of the storm; its raw figures."""
    rng = random.Random(seed)
    tally = Tally()
    started = time.monotonic()
    await asyncio.gather(
        *(session(url, env, random.Random(rng.random()), tally, timeout_s) for _ in range(count))
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "latency": tally.latency,
        "unanswered": dict(tally.unanswered),
        "errors": dict(tally.errors),
        "actions": dict(tally.actions),
        "started": started,
        "last_action": max(tally.last_action, started),
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def worker(args: tuple[str, dict[str, str], float, int, float]) -> dict[str, Any]:
    return asyncio.run(run_sessions(*args))


def storm(args: argparse.Namespace, url: str) -> dict[str, Any]:
    value = uuid.uuid4().hex
    env = {MARKER_NAME: value}
    rng = random.Random(args.seed)
    shares = [args.sessions // args.workers] * args.workers
    for index in range(args.sessions % args.workers):
        shares[index] += 1
    jobs = [(url, env, rng.random(), share, args.answer_timeout_s) for share in shares]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.map(worker, jobs)
    latency: dict[str, list[float]] = {"execute": [], "control": []}
    unanswered: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for part in parts:
        for kind, values in part["latency"].items():
            latency[kind].extend(values)
        unanswered.update(part["unanswered"])
        errors.update(part["errors"])
        actions.update(part["actions"])
    # time.monotonic() is system-wide on Linux: the workers' clocks compare.
    started = min(part["started"] for part in parts)
    ended = max(part["last_action"] for part in parts)
    left_at_end = len(marked(value))
    gone_s = None
    while time.monotonic() - ended < GONE_LIMIT_S:
        if not marked(value):
            gone_s = time.monotonic() - ended
            break
        time.sleep(0.1)
    leftovers = marked(value)
    for pid in leftovers:  # never leave the machine dirty, whatever the server did
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)

    def figures(kind: str) -> dict[str, Any]:
        values = sorted(latency[kind])
        return {
            "answered": len(values),
            "unanswered": unanswered[kind],
            "p50_ms": round(percentile(values, 0.5) * 1000, 1) if values else None,
            "p99_ms": round(percentile(values, 0.99) * 1000, 1) if values else None,
            "max_ms": round(values[-1] * 1000, 1) if values else None,
        }

    return {
        "sessions": args.sessions,
        "seed": args.seed,
        "workers": args.workers,
        "execute": figures("execute"),
        "control": figures("control"),
        "errors": dict(errors),
        "actions": dict(actions),
        "storm_s": round(ended - started, 2),
        "client_cpu_s": round(sum(part["client_cpu_s"] for part in parts), 2),
        "processes_at_end": left_at_end,
        "last_process_gone_s": None if gone_s is None else round(gone_s, 2),
        "killed_by_storm_script": len(leftovers),
        # The machine is shared: how busy it was, next to the figures.
        "load_average": [round(value, 1) for value in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.sessions
    settings: dict[str, object] = {
        "detach_grace_s": 2,
        "max_connections": n + 50,
        "max_connections_per_ip": n + 50,
        "max_executions": n + 50,
    }
    for item in args.cc_setting:
        name, _, text = item.partition("=")
        settings[name] = text
    if args.server_src:
        os.environ["PYTHONPATH"] = str(Path(args.server_src).resolve())
    with tempfile.TemporaryDirectory(prefix="ccx-storm-") as work:
        server = CcExecutorServer(Path(work), settings)
        server.start()
        try:
            result = storm(args, server.url)
            result["server_cpu_s"] = round(cpu_seconds(server.pid), 2)
        finally:
            server.stop()
    result["settings"] = settings
    result["server_src"] = args.server_src or "this checkout"
    print(json.dumps(result, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
