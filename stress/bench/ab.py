"""``python -m stress.bench.ab``: what one cc-executor setting costs.

Two cc-executor servers run side by side: A with the bench's settings, B with
the same plus ``--setting NAME=VALUE`` (``metrics_enabled=false`` by default,
so A - B is what metrics cost). Each round runs every workload on both, the
order alternating (A B, then B A) so that drift of a shared machine's load
falls on both alike. The table shows each side's median, its spread (min to
max over the rounds), the median of the per-round ratios A/B and their range;
"cost" is that median ratio minus one.

    bash ci/bench ab --rounds 9                       # metrics on vs off
    bash ci/bench ab --setting flush_bytes=4096 --only seq
    bash ci/bench ab --b-src /tmp/base --only true     # this checkout vs another
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.client import ConnectionLost
from service.errors import RpcError
from stress.bench import workloads
from stress.bench.__main__ import cc_settings
from stress.bench.report import machine, median
from stress.bench.servers import CcExecutorServer, cpu_seconds

WORKLOADS = ("seq", "true")
Measure = Callable[[CcExecutorServer], Awaitable[dict[str, float]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stress.bench.ab", description=__doc__)
    add = parser.add_argument
    add("--setting", action="append", default=[], metavar="NAME=VALUE", help="B's override")
    add(
        "--b-src",
        type=Path,
        metavar="DIR",
        help="B runs the server of this source tree (e.g. `git archive HEAD~1 | tar -x -C DIR`) "
        "with A's settings: a code change A/B in one run",
    )
    add("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    add("--rounds", type=int, default=9, help="rounds; each runs every workload on A and B")
    add("--seq-lines", type=int, default=1_000_000, help="N of `seq 1 N`")
    add("--true-runs", type=int, default=200, help="executions of `true` one after another")
    add("--concurrent", type=int, default=50, help="executions of `true` at once")
    add("--out", type=Path, default=Path("bench-results"), help="directory of the JSON file")
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.setting or ([] if args.b_src else ["metrics_enabled=false"]):
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--setting wants NAME=VALUE, got {item!r}")
        overrides[name.lower()] = value
    args.overrides = overrides
    args.workloads = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def measures(args: argparse.Namespace) -> dict[str, Measure]:
    """Each figure's name and how to take it from one server (less is better)."""

    async def seq(server: CcExecutorServer) -> dict[str, float]:
        sample = await workloads.cc_seq(server.url, args.seq_lines, server.pid, {})
        # A client starved of CPU misses chunks (dropped, not lost): the run still
        # counts, and the table says how many such runs each side had.
        return {
            "seconds": sample["seconds"],
            "server_cpu_s": sample["server_cpu_s"],
            "incomplete": 0.0 if sample["complete"] else 1.0,
        }

    async def true(server: CcExecutorServer) -> dict[str, float]:
        figures = {}
        for label, runs, at_once in (
            ("sequential", args.true_runs, False),
            ("concurrent", args.concurrent, True),
        ):
            cpu0 = cpu_seconds(server.pid)
            sample = await workloads.cc_true(server.url, runs, at_once, {})
            if sample["completed"] != runs:
                raise RuntimeError(f"true on {server.url}: {sample['completed']}/{runs} completed")
            figures[f"{label}_s"] = sample["seconds"]
            # CPU time is less disturbed than wall time by other load on the machine.
            figures[f"{label}_server_cpu_s"] = cpu_seconds(server.pid) - cpu0
        return figures

    table = {"seq": seq, "true": true}
    return {name: table[name] for name in args.workloads}


async def run_rounds(
    args: argparse.Namespace, a: CcExecutorServer, b: CcExecutorServer
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """samples[workload][figure]["A" | "B"] = one value per round."""
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    for round_ in range(args.rounds):
        order = [("A", a), ("B", b)] if round_ % 2 == 0 else [("B", b), ("A", a)]
        for name, measure in measures(args).items():
            taken: dict[str, dict[str, float]] = {}
            try:
                for side, server in order:
                    taken[side] = await measure(server)
            except (TimeoutError, OSError, RuntimeError, ConnectionLost, RpcError) as exc:
                # A shared machine can starve a run past the client's timeouts: drop
                # the pair, keep the bench going, and say so.
                print(f"round {round_ + 1} {name}: skipped ({exc!r})", file=sys.stderr, flush=True)
                continue
            for side, figures in taken.items():
                for figure, value in figures.items():
                    slot = samples.setdefault(name, {}).setdefault(figure, {"A": [], "B": []})
                    slot[side].append(value)
            shown = ", ".join(
                f"{figure} A {slot['A'][-1]:.3f} B {slot['B'][-1]:.3f}"
                for figure, slot in samples[name].items()
            )
            print(f"round {round_ + 1} {name}: {shown}", file=sys.stderr, flush=True)
    return samples


def summarise(samples: dict[str, dict[str, dict[str, list[float]]]]) -> list[dict[str, Any]]:
    rows = []
    for name, figures in samples.items():
        for figure, sides in figures.items():
            ratios = [x / y for x, y in zip(sides["A"], sides["B"], strict=True) if y > 0]
            if figure == "incomplete" or not ratios:
                ratios = [math.nan]  # a count, or nothing to divide: no ratio
            rows.append(
                {
                    "workload": name,
                    "figure": figure,
                    "A": sides["A"],
                    "B": sides["B"],
                    "A_median": median(sides["A"]),
                    "A_min": min(sides["A"]),
                    "A_max": max(sides["A"]),
                    "B_median": median(sides["B"]),
                    "B_min": min(sides["B"]),
                    "B_max": max(sides["B"]),
                    "ratio_median": median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                }
            )
    return rows


def render(rows: list[dict[str, Any]], overrides: dict[str, str], b_src: Path | None) -> str:
    changed = [f"{k}={v}" for k, v in overrides.items()]
    if b_src is not None:
        changed.append(f"the server of {b_src}")
    lines = [
        f"A: bench settings; B: A + {', '.join(changed)}. "
        "Per-round ratio A/B; cost = median ratio - 1.",
        "",
        "| workload | figure | A median (min-max) | B median (min-max) "
        "| A/B median (min-max) | cost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["figure"] == "incomplete":
            lines.append(
                f"| {row['workload']} | runs with chunks dropped (client starved) "
                f"| {sum(row['A']):g} | {sum(row['B']):g} | | |"
            )
            continue
        lines.append(
            f"| {row['workload']} | {row['figure']} "
            f"| {row['A_median']:.3f} ({row['A_min']:.3f}-{row['A_max']:.3f}) "
            f"| {row['B_median']:.3f} ({row['B_min']:.3f}-{row['B_max']:.3f}) "
            f"| {row['ratio_median']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f}) "
            f"| {100 * (row['ratio_median'] - 1):+.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    where = machine()
    base = cc_settings(
        argparse.Namespace(pause_executions=0, concurrent=args.concurrent, idle=0, cc_overrides={})
    )
    with tempfile.TemporaryDirectory(prefix="cc-bench-ab-") as tmp:
        a_dir, b_dir = Path(tmp) / "a", Path(tmp) / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        a = CcExecutorServer(a_dir, base)
        b = CcExecutorServer(b_dir, {**base, **args.overrides}, source=args.b_src)
        a.start(timeout_s=90)  # a loaded shared machine starts Python slowly
        try:
            b.start(timeout_s=90)
            try:
                samples = asyncio.run(run_rounds(args, a, b))
            finally:
                b.stop()
        finally:
            a.stop()
    where["loadavg_after"] = machine()["loadavg"]
    rows = summarise(samples)
    print(render(rows, args.overrides, args.b_src))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out / f"bench-ab-{stamp}.json"
    document = {
        "command": " ".join(["python -m stress.bench.ab", *(argv or sys.argv[1:])]),
        "overrides": args.overrides,
        "b_src": str(args.b_src) if args.b_src else None,
        "machine": where,
        "rows": rows,
        "samples": samples,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"saved {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
