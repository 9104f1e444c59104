"""Answering an agent's tool permissions in the terminal.

``cc-executor approvals PROJECT`` subscribes to a project, lists the requests
already pending (``agent.permissions``) and then asks about each new
``agent.permission``, one at a time, until Ctrl-C (or ``--count`` decisions).
``cc-executor agent PROJECT "prompt" --approve`` does the same for its own run
(:mod:`service.client.commands.agent` uses :class:`Approver`).

Each request is shown on stderr as the tool and a summary of its input, then
``allow? [y/N]``. An answer of ``y`` or ``yes`` allows; anything else denies,
and text after ``n`` (``n not in prod``) becomes the message the agent sees.
A request decided meanwhile elsewhere (another client, the timeout, the run
ending) is dropped with a note. At the end of stdin nothing more can be
answered: the command ends, leaving what is pending to others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any, TextIO

from service import errors
from service.client import ExecutorClient
from service.client.commands import (
    add_connection_options,
    build_client,
    connect,
    registered,
    report,
    resolve_project,
)

#: Characters of a tool's input shown in a prompt.
SUMMARY_CHARS = 300


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if registered(subparsers, "approvals"):
        return
    parser = subparsers.add_parser(
        "approvals",
        help="follow a project and allow or deny its agents' tool uses",
        description="Subscribe to PROJECT (id or name) and ask, for each tool permission its "
        "agent requests, whether to allow it (y) or deny it (n, optionally followed by a "
        "reason). Runs until Ctrl-C or the end of stdin.",
    )
    parser.add_argument("project", metavar="PROJECT")
    parser.add_argument(
        "--count", type=int, default=None, help="exit after answering this many requests"
    )
    add_connection_options(parser)


def run(args: argparse.Namespace) -> int:
    from service.client.commands import run_command

    return run_command(lambda: approvals_main(args))


def describe(params: dict[str, Any]) -> str:
    text = json.dumps(params.get("input"), ensure_ascii=False, sort_keys=True)
    if len(text) > SUMMARY_CHARS:
        text = text[:SUMMARY_CHARS] + "..."
    return f"{params.get('tool_name')} {text}"


def parse_answer(line: str) -> tuple[str, str | None]:
    """``y``/``yes`` allows; anything else denies, with the text after the first word."""
    word, _, rest = line.strip().partition(" ")
    if word.lower() in ("y", "yes"):
        return "allow", None
    return "deny", rest.strip() or "denied in the terminal"


class StdinLines:
    """Lines of stdin without blocking the loop (a pipe or a terminal), or of a
    regular file read at once. Restores stdin's blocking mode at close."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._lines: list[str] | None = None
        self._fd = sys.stdin.fileno()
        self._blocking = os.get_blocking(self._fd)

    async def open(self) -> StdinLines:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            self._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
            )
            self._reader = reader
        except ValueError:  # a regular file: nothing to wait for
            self._lines = sys.stdin.read().splitlines()
        return self

    async def readline(self) -> str | None:
        """The next line, or None at the end."""
        if self._lines is not None:
            return self._lines.pop(0) if self._lines else None
        assert self._reader is not None
        raw = await self._reader.readline()
        return raw.decode(errors="replace") if raw else None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(OSError):
            os.set_blocking(self._fd, self._blocking)


class Approver:
    """Asks about each permission request seen on ``client.notifications``
    (those of ``execution_id`` only, when given) and sends the answers."""

    def __init__(
        self,
        client: ExecutorClient,
        lines: StdinLines,
        err: TextIO,
        out: TextIO,
        execution_id: str | None = None,
    ) -> None:
        self.client = client
        self.lines = lines
        self.err = err
        self.out = out
        self.execution_id = execution_id
        self.queue: list[dict[str, Any]] = []
        self.decided = 0

    def add(self, params: dict[str, Any]) -> None:
        if all(p["request_id"] != params["request_id"] for p in self.queue):
            self.queue.append(params)

    def _ours(self, params: dict[str, Any]) -> bool:
        return self.execution_id is None or params.get("execution_id") == self.execution_id

    def _say(self, text: str, prompt: bool = False) -> None:
        self.err.write(text if prompt else text + "\n")
        self.err.flush()

    async def run(self, limit: int | None = None) -> int:
        """Answer until ``limit`` decisions, the end of stdin or the connection's
        end; the number of decisions sent. Cancelling it is safe."""
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def notes() -> None:
            while True:
                events.put_nowait(("note", await self.client.notifications.get()))

        async def lines() -> None:
            while True:
                line = await self.lines.readline()
                events.put_nowait(("line", line))
                if line is None:
                    return

        async def closed() -> None:
            await self.client.closed.wait()
            events.put_nowait(("closed", None))

        tasks = [asyncio.create_task(job()) for job in (notes, lines, closed)]
        prompted: str | None = None
        try:
            while limit is None or self.decided < limit:
                if self.queue and prompted != self.queue[0]["request_id"]:
                    head = self.queue[0]
                    self._say(f"[permission] {describe(head)}", prompt=False)
                    self._say("allow? [y/N] ", prompt=True)
                    prompted = head["request_id"]
                kind, item = await events.get()
                if kind == "closed" or (kind == "line" and item is None):
                    break
                if kind == "note":
                    prompted = self._note(item, prompted)
                elif kind == "line" and self.queue:
                    await self._decide(self.queue.pop(0), item)
                    prompted = None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.decided

    def _note(self, message: dict[str, Any], prompted: str | None) -> str | None:
        params = message.get("params") or {}
        if not self._ours(params):
            return prompted
        if message.get("method") == "agent.permission":
            self.add(params)
        elif message.get("method") == "agent.permission_resolved":
            request_id = params.get("request_id")
            waiting = [p for p in self.queue if p["request_id"] == request_id]
            self.queue = [p for p in self.queue if p["request_id"] != request_id]
            if waiting:
                self._say(
                    f"\n[permission] {describe(waiting[0])}: {params.get('behavior')} "
                    f"by {params.get('by')} {params.get('connection_id') or ''}".rstrip()
                )
                if prompted == request_id:
                    return None
        return prompted

    async def _decide(self, request: dict[str, Any], line: str) -> None:
        behavior, message = parse_answer(line)
        decision: dict[str, Any] = {"request_id": request["request_id"], "behavior": behavior}
        if message is not None:
            decision["message"] = message
        try:
            await self.client.call("agent.decide", decision)
        except errors.InvalidState as exc:
            self._say(f"[permission] too late: {exc.message}")
            return
        except errors.NotFound as exc:
            self._say(f"[permission] {exc.message}")
            return
        self.decided += 1
        self.out.write(f"{behavior} {describe(request)}\n")
        self.out.flush()


async def approvals_main(args: argparse.Namespace) -> int:
    lines = await StdinLines().open()
    try:
        async with await connect(build_client(args)) as client:
            project_id = await resolve_project(client, args.project)
            await client.call("project.subscribe", {"project_id": project_id})
            approver = Approver(client, lines, sys.stderr, sys.stdout)
            listing = await client.call("agent.permissions", {"project_id": project_id})
            for params in listing.get("requests", []):
                approver.add(params)
            report(f"following the permissions of project {args.project} (Ctrl-C to stop)")
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            try:
                await approver.run(args.count)
            except asyncio.CancelledError:
                if task.cancelling() == 0:
                    raise
                task.uncancel()
            finally:
                loop.remove_signal_handler(signal.SIGINT)
    finally:
        lines.close()
    return 0
