"""``cc-executor ps`` and ``cc-executor pause|resume|cancel ID``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any, TextIO

from service import errors
from service.client.commands import (
    CommandError,
    add_connection_options,
    build_client,
    connect,
    registered,
    run_command,
)

CONTROLS = {"pause": "PAUSE", "resume": "RESUME", "cancel": "CANCEL"}
COLUMNS = ("ID", "STATE", "AGE", "PID", "COMMAND")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if not registered(subparsers, "ps"):
        ps = subparsers.add_parser("ps", help="list executions: id, state, age, pid, command")
        ps.add_argument("--state", help="only executions in this state (running, paused, ...)")
        ps.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        ps.add_argument("--json", action="store_true", help="print the raw records as JSON lines")
        add_connection_options(ps)
    for name, kind in CONTROLS.items():
        if registered(subparsers, name):
            continue
        parser = subparsers.add_parser(name, help=f"send {kind} to an execution")
        parser.add_argument("execution_id", metavar="ID")
        add_connection_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.command == "ps":
        return run_command(lambda: ps_main(args))
    return run_command(lambda: control_main(args))


async def control_main(args: argparse.Namespace) -> int:
    async with await connect(build_client(args)) as client:
        result = await client.call(
            "control", {"type": CONTROLS[args.command], "execution_id": args.execution_id}
        )
    print(f"{result['execution_id']} {result['status']}")
    return 0


async def ps_main(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    async with await connect(build_client(args)) as client:
        try:
            result = await client.call("executions.list", params)
        except errors.MethodNotFound:
            raise CommandError("this server cannot list executions (no executions.list)") from None
    records = result.get("executions", []) if isinstance(result, dict) else list(result)
    if args.json:
        import orjson

        for record in records:
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
        return 0
    print_table(records, sys.stdout)
    return 0


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def row(record: dict[str, Any], now: float) -> tuple[str, ...]:
    execution_id = str(record.get("execution_id") or record.get("id") or "?")
    command = record.get("command")
    if not command:
        argv = record.get("argv")
        command = shlex.join(argv) if isinstance(argv, list) else ""
    created = record.get("started_at") or record.get("created_at")
    age = format_age(now - float(created)) if isinstance(created, int | float) else "-"
    pid = record.get("pid")
    return (execution_id, str(record.get("state", "?")), age, str(pid) if pid else "-", command)


def print_table(records: list[dict[str, Any]], out: TextIO, now: float | None = None) -> None:
    """A table like ``ps``: one line per execution, the command last and unpadded."""
    rows = [row(record, time.time() if now is None else now) for record in records]
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
    for line in [COLUMNS, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.write("  ".join([*cells, line[-1]]).rstrip() + "\n")
