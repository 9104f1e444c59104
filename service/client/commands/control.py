"""``cc-executor ps`` and ``cc-executor pause|resume|cancel ID``."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import ssl
import sys
import time
import urllib.request
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson

from service import errors
from service.client import ExecutorClient
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
        ps = subparsers.add_parser(
            "ps",
            help="list executions: id, state, age, pid, command",
            description="List the executions the server has recorded in its data directory, "
            "newest first: every run of every client of that server, not only this user's or "
            "this terminal's (on a shared machine, everyone who uses the same server and data "
            "directory). The first line, on stderr, names the server and its data directory.",
        )
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
        data_dir = await asyncio.to_thread(store_path, client)
        print(
            f"cc-executor: every run recorded by {client.url}, "
            f"data directory {data_dir or 'unknown (no /health)'}",
            file=sys.stderr,
            flush=True,
        )
        try:
            result = await client.call("executions.list", params)
        except errors.MethodNotFound:
            raise CommandError("this server cannot list executions (no executions.list)") from None
    records = result.get("executions", []) if isinstance(result, dict) else list(result)
    if args.json:
        for record in records:
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
        return 0
    print_table(records, sys.stdout)
    return 0


def store_path(client: ExecutorClient) -> str | None:
    """The server's data directory, from its ``/health`` (``store.path``); None
    when the server does not say (an older server, a store that is off)."""
    parts = urlsplit(client.url)
    scheme = "https" if parts.scheme == "wss" else "http"
    request = urllib.request.Request(f"{scheme}://{parts.netloc}/health")
    if client.token:
        request.add_header("Authorization", f"Bearer {client.token}")
    context = None
    if scheme == "https":
        context = client.ssl or ssl.create_default_context()
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            health = orjson.loads(response.read())
    except (OSError, ValueError):
        return None
    path = (health.get("store") or {}).get("path") if isinstance(health, dict) else None
    return os.path.dirname(path) if isinstance(path, str) else None


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
