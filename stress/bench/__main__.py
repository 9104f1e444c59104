"""``python -m stress.bench``: cc-executor against websocketd, printed and saved.

Each workload runs on websocketd then on cc-executor, round after round (A B
A B), so both see the same noise of a shared machine; the table shows
medians, and "cc better by" is the ratio measured in this run. The
cc-executor server gets raised limits, all printed and saved with the
figures: the PAUSE bench needs ``pause_executions`` live executions on one
connection, the idle bench ``idle`` connections from one address, and the
rate limit would otherwise throttle the bench's own requests.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from stress.bench import workloads
from stress.bench.report import (
    Row,
    cost_row,
    machine,
    median,
    percentile,
    rate_row,
    table,
    write_json,
)
from stress.bench.servers import (
    CcExecutorServer,
    WebsocketdServer,
    start_profiler,
    stop_profiler,
)

WORKLOADS = ("seq", "yes", "true", "pause", "idle")
#: Issue #13's target for PAUSE with 100 streaming executions (was 50 ms before it).
PAUSE_P99_TARGET_MS = 20.0
PERL_INTERVAL_S = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stress.bench",
        description="Benchmark cc-executor against websocketd on loopback.",
    )
    add = parser.add_argument
    add("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    add("--rounds", type=int, default=5, help="rounds of the seq and true workloads")
    add("--seq-lines", type=int, default=1_000_000, help="N of `seq 1 N`")
    add("--seconds", type=float, default=60.0, help="length of each `yes` run")
    add("--yes-rounds", type=int, default=2, help="rounds of the yes workload")
    add("--true-runs", type=int, default=200, help="executions of `true` one after another")
    add("--concurrent", type=int, default=50, help="executions of `true` at once")
    add("--pause-executions", type=int, default=100, help="streaming executions during PAUSE")
    add("--pause-samples", type=int, default=200, help="PAUSE requests timed")
    add(
        "--pause-streamer",
        choices=("perl", "yes"),
        default="perl",
        help="what the executions stream during PAUSE: a perl loop printing "
        "--pause-rate lines/s, or `yes` flat out",
    )
    add("--pause-rate", type=int, default=1000, help="lines/s of each perl streamer")
    add("--idle", type=int, default=1000, help="idle connections to open")
    add(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="variable given to every child of both servers (tests use it to find leaks)",
    )
    add(
        "--cc-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a cc-executor setting (flush_bytes=4096); repeatable",
    )
    add("--check", action="store_true", help="exit 1 when a target is not met")
    add(
        "--profile",
        type=Path,
        metavar="FILE",
        help="record the cc-executor server with py-spy (raw folded stacks) into FILE",
    )
    add("--out", type=Path, default=Path("bench-results"), help="directory of the JSON file")
    args = parser.parse_args(argv)
    args.workloads = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    args.child_env = env
    overrides: dict[str, str] = {}
    for item in args.cc_setting:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--cc-setting wants NAME=VALUE, got {item!r}")
        overrides[name.lower()] = value
    if overrides.get("log_level", "INFO").upper() not in ("INFO", "DEBUG"):
        parser.error("log_level must stay INFO or DEBUG: the bench reads the port from the log")
    args.cc_overrides = overrides
    return args


def cc_settings(args: argparse.Namespace) -> dict[str, object]:
    """The cc-executor settings of the bench; defaults but for these limits."""
    executions = max(args.pause_executions, args.concurrent, 10) + 10
    connections = max(args.idle, 100) + 50
    return {
        "max_executions_per_connection": executions,
        "max_executions": executions,
        "max_connections": connections,
        "max_connections_per_ip": connections,
        "rate_limit_per_s": 100_000,
        "rate_limit_burst": 100_000,
        "pass_env": ["PATH", "HOME", "LANG", "LC_*"],
        "log_level": "INFO",
        **args.cc_overrides,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.env: dict[str, str] = args.child_env
        self.cc = CcExecutorServer(work_dir, cc_settings(args))
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}

    def websocketd(self, *argv: str) -> WebsocketdServer:
        server = WebsocketdServer(self.work_dir, argv, self.env)
        server.start()
        return server

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def run(self) -> None:
        self.cc.start()
        profiler = None
        if self.args.profile is not None:
            profiler = start_profiler(self.cc.pid, self.args.profile)
        try:
            for name in self.args.workloads:
                await getattr(self, f"bench_{name}")()
        finally:
            if profiler is not None:
                stop_profiler(profiler)
            self.cc.stop()

    async def bench_seq(self) -> None:
        n = self.args.seq_lines
        wsd = self.websocketd("seq", "1", str(n))
        samples: dict[str, list[dict[str, Any]]] = {"websocketd": [], "cc-executor": []}
        try:
            for round_ in range(self.args.rounds):
                a = await workloads.wsd_seq(wsd.url, n, wsd.pid)
                b = await workloads.cc_seq(self.cc.url, n, self.cc.pid, self.env)
                samples["websocketd"].append(a)
                samples["cc-executor"].append(b)
                self.say(
                    f"seq round {round_ + 1}: websocketd {a['seconds']:.3f}s, "
                    f"cc-executor {b['seconds']:.3f}s ({b['lines']} lines, "
                    f"{b['dropped_chunks']} chunks dropped)"
                )
        finally:
            wsd.stop()
        self.raw["seq"] = samples
        w, c = samples["websocketd"], samples["cc-executor"]
        short = sum(1 for s in c if not s["complete"]) + sum(1 for s in w if not s["complete"])
        note = "all lines delivered" if short == 0 else f"{short} runs incomplete"
        self.rows.append(
            cost_row(
                f"seq 1 {n}",
                "connect to last line",
                "s",
                median([s["seconds"] for s in w]),
                median([s["seconds"] for s in c]),
                3,
                note,
            )
        )
        self.rows.append(
            cost_row(
                f"seq 1 {n}",
                "server CPU",
                "s",
                median([s["server_cpu_s"] for s in w]),
                median([s["server_cpu_s"] for s in c]),
                None,
            )
        )

    async def bench_yes(self) -> None:
        seconds = self.args.seconds
        wsd = self.websocketd("yes")
        samples: dict[str, list[dict[str, Any]]] = {"websocketd": [], "cc-executor": []}
        try:
            for round_ in range(self.args.yes_rounds):
                a = await workloads.wsd_yes(wsd.url, seconds, wsd.pid)
                b = await workloads.cc_yes(self.cc.url, seconds, self.cc.pid, self.env)
                for sample in (a, b):
                    sample["lines_per_s"] = sample["lines"] / sample["seconds"]
                    sample["cpu_s_per_million"] = sample["server_cpu_s"] / max(
                        1e-9, sample["lines"] / 1e6
                    )
                samples["websocketd"].append(a)
                samples["cc-executor"].append(b)
                self.say(
                    f"yes round {round_ + 1}: websocketd {a['lines_per_s']:.0f} lines/s, "
                    f"cc-executor {b['lines_per_s']:.0f} lines/s "
                    f"({b['dropped_chunks']} chunks dropped, "
                    f"{b['lines']}/{b['lines_read']} lines read delivered)"
                )
        finally:
            wsd.stop()
        self.raw["yes"] = samples
        w, c = samples["websocketd"], samples["cc-executor"]
        dropped = median([s["dropped_chunks"] for s in c])
        delivered = median([s["lines"] / max(1, s["lines_read"]) for s in c])
        note = f"median {dropped:g} chunks dropped, {delivered:.0%} of lines read delivered"
        label = f"yes, {seconds:g} s"
        self.rows.append(
            rate_row(
                label,
                "delivered lines/s",
                "",
                median([s["lines_per_s"] for s in w]),
                median([s["lines_per_s"] for s in c]),
                1,
                note,
            )
        )
        self.rows.append(
            cost_row(
                label,
                "server CPU per 1M delivered lines",
                "s",
                median([s["cpu_s_per_million"] for s in w]),
                median([s["cpu_s_per_million"] for s in c]),
                None,
            )
        )

    async def bench_true(self) -> None:
        args = self.args
        wsd = self.websocketd("true")
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            "sequential": {"websocketd": [], "cc-executor": []},
            "concurrent": {"websocketd": [], "cc-executor": []},
        }
        try:
            for round_ in range(args.rounds):
                for mode, runs in (("sequential", args.true_runs), ("concurrent", args.concurrent)):
                    at_once = mode == "concurrent"
                    a = await workloads.wsd_true(wsd.url, runs, at_once)
                    b = await workloads.cc_true(self.cc.url, runs, at_once, self.env)
                    samples[mode]["websocketd"].append(a)
                    samples[mode]["cc-executor"].append(b)
                    self.say(
                        f"true {mode} round {round_ + 1}: websocketd {a['seconds']:.3f}s, "
                        f"cc-executor {b['seconds']:.3f}s"
                    )
        finally:
            wsd.stop()
        self.raw["true"] = samples
        for mode, runs, label in (
            ("sequential", args.true_runs, f"{args.true_runs} x true, in turn"),
            ("concurrent", args.concurrent, f"{args.concurrent} x true, at once"),
        ):
            w, c = samples[mode]["websocketd"], samples[mode]["cc-executor"]
            failed = sum(runs - s["completed"] for s in c)
            note = "" if failed == 0 else f"{failed} not completed"
            self.rows.append(
                cost_row(
                    label,
                    "total",
                    "s",
                    median([s["seconds"] for s in w]),
                    median([s["seconds"] for s in c]),
                    1,
                    note,
                )
            )

    def streamer(self) -> list[str]:
        """What each execution streams during the PAUSE bench.

        ``perl``: a burst of lines every 10 ms, ``--pause-rate`` lines/s in all,
        one write per burst; it costs a fraction of a percent of a core each,
        so the 100 of them leave the CPU to the server. ``yes``: flat out, the
        worst case (100 processes always runnable on the machine's cores).
        """
        if self.args.pause_streamer == "yes":
            return ["yes"]
        burst = max(1, round(self.args.pause_rate * PERL_INTERVAL_S))
        script = (
            "$| = 1; my $n = 0; while (1) { my $s = ''; "
            f"$s .= 'line ' . $n++ . \" of the pause benchmark\\n\" for 1..{burst}; "
            f"print $s; select(undef, undef, undef, {PERL_INTERVAL_S}) }}"
        )
        return ["perl", "-e", script]

    async def bench_pause(self) -> None:
        """PAUSE latency while every execution streams (the target), then the
        same with sleeping executions (what PAUSE itself costs, without load)."""
        args = self.args
        what = "yes" if args.pause_streamer == "yes" else f"{args.pause_rate} lines/s"
        cases = (
            (f"PAUSE, {args.pause_executions} x {what} streaming", self.streamer(), "streaming"),
            (f"PAUSE, {args.pause_executions} x sleep (reference)", ["sleep", "3600"], "sleeping"),
        )
        self.raw["pause"] = {}
        for label, argv, key in cases:
            result = await workloads.cc_pause(
                self.cc.url, self.cc.pid, args.pause_executions, args.pause_samples, argv, self.env
            )
            self.raw["pause"][key] = result
            pause_ms = [s * 1000 for s in result["latencies_s"]]
            status_ms = [s * 1000 for s in result["status_round_trips_s"]]
            p50, p99 = percentile(pause_ms, 0.50), percentile(pause_ms, 0.99)
            self.say(
                f"pause {key}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(pause_ms):.2f} ms; "
                f"status round trip p50 {percentile(status_ms, 0.5):.2f} ms; "
                f"server CPU {result['server_cpu_share']:.0%} of a core; "
                f"{result['lines']} lines in {result['frames']} frames delivered, "
                f"{result['dropped']} chunks dropped; {result['not_stopped']} not stopped"
            )
            note = "" if result["not_stopped"] == 0 else f"{result['not_stopped']} not in T"
            streaming = key == "streaming"
            self.rows.append(Row(label, "PAUSE p50", "ms", None, p50, None, "", None))
            self.rows.append(
                Row(
                    label,
                    "PAUSE p99",
                    "ms",
                    None,
                    p99,
                    None,
                    f"< {PAUSE_P99_TARGET_MS:g} ms" if streaming else "",
                    (p99 < PAUSE_P99_TARGET_MS) if streaming else None,
                    note,
                )
            )
            self.rows.append(
                Row(
                    label,
                    "status round trip p50",
                    "ms",
                    None,
                    percentile(status_ms, 0.5),
                    None,
                    "",
                    None,
                )
            )
            self.rows.append(
                Row(
                    label,
                    "server CPU share",
                    "%",
                    None,
                    100 * result["server_cpu_share"],
                    None,
                    "",
                    None,
                )
            )

    async def bench_idle(self) -> None:
        count = self.args.idle
        wsd = self.websocketd("cat")
        try:
            a = await workloads.idle_connections(wsd.url, count, wsd.pid, wait_first_frame=False)
        finally:
            wsd.stop()
        b = await workloads.idle_connections(self.cc.url, count, self.cc.pid, wait_first_frame=True)
        self.raw["idle"] = {"websocketd": a, "cc-executor": b}
        self.say(f"idle: websocketd {a['open_s']:.2f}s, cc-executor {b['open_s']:.2f}s")
        label = f"{count} idle connections"
        self.rows.append(cost_row(label, "time to open", "s", a["open_s"], b["open_s"], None))
        self.rows.append(
            cost_row(
                label,
                "server RSS per connection",
                "KiB",
                a["rss_per_connection"] / 1024,
                b["rss_per_connection"] / 1024,
                None,
            )
        )
        self.rows.append(
            cost_row(
                label,
                "RSS per connection with children",
                "KiB",
                a["rss_per_connection_with_children"] / 1024,
                b["rss_per_connection_with_children"] / 1024,
                None,
                f"websocketd runs {a['children']} cat processes",
            )
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    where = machine()
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        asyncio.run(bench.run())
        settings = bench.cc.settings
    where["loadavg_after"] = machine()["loadavg"]
    print(table(bench.rows))
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path = write_json(
        args.out,
        {
            "command": " ".join(["python -m stress.bench", *(argv or sys.argv[1:])]),
            "arguments": arguments,
            "machine": where,
            "cc_executor_settings": settings,
            "samples": bench.raw,
        },
        bench.rows,
    )
    print(f"\nfigures saved to {path}")
    failed = [row for row in bench.rows if row.met is False]
    if failed:
        print(f"{len(failed)} target(s) not met", file=sys.stderr)
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
