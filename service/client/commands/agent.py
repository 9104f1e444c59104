"""``cc-executor agent PROJECT "prompt"``: run a Claude Code agent in a project.

PROJECT is a project id or name. The agent's stream-json stdout is read line by
line: assistant text goes to stdout as it arrives, tool calls are noted on
stderr, and the ``result`` event (or the ``agent.result`` notification) ends
with a one-line summary on stderr. Ctrl-C cancels the agent (the kill ladder);
a second Ctrl-C disconnects. With ``--approve`` the run asks its tool
permissions of this terminal (y/n on stdin; :mod:`service.client.commands.approvals`).
The exit status is 0 for a successful result, 1
for an error result, else the process's own status (as ``run``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any, TextIO

from service import errors
from service.client import ConnectionLost, ExecutorClient, RemoteExecution
from service.client.commands import (
    add_connection_options,
    build_client,
    connect,
    registered,
    report,
    resolve_project,
    run_command,
)
from service.client.commands.approvals import Approver, StdinLines, describe
from service.client.commands.run import parse_env
from service.client.commands.terminal import EXIT_INTERRUPTED, exit_status
from service.stream_json import EventLines, assistant_text, result_summary, tool_calls


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if registered(subparsers, "agent"):
        return
    agent = subparsers.add_parser(
        "agent",
        help="run a Claude Code agent in a project and print its answer",
        description="Run the Claude Code agent of PROJECT (id or name) with PROMPT, resuming "
        "the project's session; print its text and a result summary.",
    )
    agent.add_argument("project", metavar="PROJECT")
    agent.add_argument("prompt", metavar="PROMPT")
    agent.add_argument("--model", help="model for this run")
    agent.add_argument("--max-turns", type=int, help="turn limit for this run")
    agent.add_argument("--timeout", type=float, help="wall-clock limit in seconds")
    agent.add_argument(
        "--new-session", action="store_true", help="forget the project's Claude session first"
    )
    agent.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the agent (repeatable)",
    )
    agent.add_argument(
        "--approve",
        action="store_true",
        help="ask in this terminal (y/n) before each tool use that needs permission",
    )
    add_connection_options(agent)


def run(args: argparse.Namespace) -> int:
    return run_command(lambda: agent_main(args))


class AgentPrinter:
    """Turns stream-json events into terminal text; remembers the result."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.result: dict[str, Any] | None = None

    def event(self, event: dict[str, Any]) -> None:
        text = assistant_text(event)
        if text:
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()
        for name in tool_calls(event):
            self.err.write(f"[tool {name}]\n")
            self.err.flush()
        if event.get("type") == "result":
            self.result = event

    def summary(self) -> str:
        return "agent: " + result_summary(self.result or {})


async def agent_main(args: argparse.Namespace) -> int:
    async with await connect(build_client(args)) as client:
        project_id = await resolve_project(client, args.project)
        if args.new_session:
            await client.call("agent.new_session", {"project_id": project_id})
        params: dict[str, Any] = {"project_id": project_id, "prompt": args.prompt}
        for key in ("model", "max_turns", "timeout"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        env = parse_env(args.env)
        if env:
            params["env"] = env
        if args.approve:
            params["approvals"] = "clients"
        started = await client.call("agent.execute", params)
        execution = RemoteExecution(client, started["execution_id"], started)
        printer = AgentPrinter(sys.stdout, sys.stderr)
        if not args.approve:
            noting = asyncio.create_task(note_permissions(client, execution.id))
            try:
                completed = await follow_agent(client, execution, printer)
            finally:
                noting.cancel()
                await asyncio.gather(noting, return_exceptions=True)
        else:
            # Requests of this run are asked on stderr, answered on stdin, while
            # the agent's text goes on printing to stdout.
            lines = await StdinLines().open()
            approver = Approver(client, lines, sys.stderr, sys.stderr, execution.id)
            approving = asyncio.create_task(approver.run())
            try:
                completed = await follow_agent(client, execution, printer)
            finally:
                approving.cancel()
                await asyncio.gather(approving, return_exceptions=True)
                lines.close()
    if completed is None:
        return EXIT_INTERRUPTED
    if printer.result is not None:
        report(printer.summary())
        if completed.get("status") == "completed":
            return 1 if printer.result.get("is_error") else 0
        return exit_status(completed) or 1
    status = exit_status(completed)
    if status == 0:
        report("agent: the run ended without a result event")
        return 1
    return status


async def note_permissions(client: ExecutorClient, execution_id: str) -> None:
    """Without ``--approve`` (the server asks clients by default): say why the
    run waits, and who answered."""
    while True:
        message = await client.notifications.get()
        params = message.get("params") or {}
        if params.get("execution_id") != execution_id:
            continue
        if message.get("method") == "agent.permission":
            report(
                f"the agent asks to use {describe(params)}; waiting for a client to decide "
                "(run with --approve to answer here)"
            )
        elif message.get("method") == "agent.permission_resolved":
            report(f"permission {params.get('behavior')} by {params.get('by')}")


async def follow_agent(
    client: ExecutorClient, execution: RemoteExecution, printer: AgentPrinter
) -> dict[str, Any] | None:
    """Print the agent's events until ``process.completed`` (returned); None when
    the user disconnected with a second Ctrl-C."""
    loop = asyncio.get_running_loop()
    interrupts = 0
    tasks: set[asyncio.Task[Any]] = set()

    async def cancel() -> None:
        with contextlib.suppress(errors.RpcError, ConnectionLost):
            await execution.cancel()

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        task: asyncio.Task[Any]
        if interrupts == 1:
            report("cancelling the agent (press Ctrl-C again to disconnect)")
            task = loop.create_task(cancel())
        else:
            task = loop.create_task(client.close())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    lines = EventLines()
    notified: dict[str, Any] | None = None
    try:
        async for message in execution.events():
            method, params = message["method"], message["params"]
            if method == "process.output" and params.get("type") == "stdout":
                for event in lines.feed(params.get("data", "")):
                    printer.event(event)
            elif method == "process.output":
                sys.stderr.write(params.get("data", ""))
                sys.stderr.flush()
            elif method == "agent.result":
                notified = dict(params)
            elif method == "process.completed":
                for event in lines.finish():
                    printer.event(event)
                if printer.result is None:
                    printer.result = notified
                return dict(params)
        return None
    except ConnectionLost:
        return None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
