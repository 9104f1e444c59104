"""How an MCP tool call follows an execution and answers.

:func:`follow` relays an execution's output as rate-limited MCP progress
(:class:`ProgressRelay`) until ``process.completed``, and cancels the
execution when the call is abandoned. :class:`Tail` keeps the end of each
stream for the result; :class:`ExecuteOutput` and :class:`AgentOutput` are the
structured results; :func:`tool` is the one place where a typed error becomes
an MCP error result.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import anyio
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from service import errors
from service.server.local_connection import LocalConnection
from service.stream_json import result_summary

logger = logging.getLogger(__name__)
P = ParamSpec("P")


class ExecuteOutput(BaseModel):
    """The structured result of ``execute``."""

    execution_id: str
    status: str = Field(description="completed, failed, cancelled or timed_out")
    exit_code: int | None = Field(description="the exit code, null when killed by a signal")
    signal: int | None = None
    duration_s: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    dropped: int = Field(0, description="chunks not streamed live (the transcript has them)")


class AgentOutput(BaseModel):
    """The structured result of ``agent``."""

    execution_id: str
    status: str
    exit_code: int | None
    is_error: bool | None = None
    result: str | None = None
    session_id: str | None = None
    num_turns: int | None = None
    cost_usd: float | None = None


class Tail:
    """The last ``limit`` characters written, and how many were written in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._parts: deque[str] = deque()
        self._size = 0

    def add(self, text: str) -> None:
        self.total += len(text)
        self._parts.append(text)
        self._size += len(text)
        while self._size - len(self._parts[0]) >= self.limit:
            self._size -= len(self._parts.popleft())

    def text(self) -> str:
        joined = "".join(self._parts)
        return joined[-self.limit :] if len(joined) > self.limit else joined

    def take(self) -> str:
        """The tail, with a note of what was skipped before it; then empty.

        The whole message, note included, is at most ``limit`` bytes of UTF-8
        (docs/mcp.md promises 16 KiB per progress message) when ``limit`` has
        room for the note (about 40 bytes).
        """
        kept, total = self.text(), self.total
        self._parts.clear()
        self._size = self.total = 0
        while True:
            skipped = total - len(kept)
            note = f"[... {skipped} characters not shown ...]\n" if skipped else ""
            room = max(0, self.limit - len(note.encode()))
            encoded = kept.encode()
            if len(encoded) <= room:
                return note + kept
            # Cutting more may lengthen the count by a digit: measure again.
            kept = encoded[len(encoded) - room :].decode("utf-8", "ignore")


class ProgressRelay:
    """Rate-limited ``notifications/progress`` for one call.

    :meth:`add` buffers text; :meth:`pump` sends what is buffered when
    ``interval_s`` has passed since the last notification, or an empty
    heartbeat after ``heartbeat_s`` of silence. ``progress`` counts the
    notifications, so it always increases.
    """

    def __init__(
        self,
        ctx: Context,
        interval_s: float,
        heartbeat_s: float,
        message_chars: int,
    ) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.buffer = Tail(message_chars)
        self.sent = 0
        self._last = time.monotonic()

    def add(self, text: str) -> None:
        if text:
            self.buffer.add(text)

    def wait_s(self) -> float:
        """How long the caller may wait for more before :meth:`pump` is due."""
        due = self.interval_s if self.buffer.total else self.heartbeat_s
        return max(0.0, self._last + due - time.monotonic())

    async def pump(self, final: bool = False) -> None:
        if self.wait_s() > 0 and not final:
            return
        if final and not self.buffer.total:
            return
        message = self.buffer.take() or None
        self.sent += 1
        self._last = time.monotonic()
        await self.ctx.report_progress(float(self.sent), None, message)


def rpc_error_result(exc: errors.RpcError) -> CallToolResult:
    return CallToolResult(
        content=[
            TextContent(type="text", text=f"{exc.message} ({exc.error_name}, error {exc.code})")
        ],
        is_error=True,
    )


def tool(
    run: Callable[P, Awaitable[CallToolResult]],
) -> Callable[P, Awaitable[CallToolResult]]:
    """The one error boundary of the MCP tools: a typed error that a tool's
    request answered with becomes an error result naming its message and code.
    Anything else is the SDK's to report (a bug: no detail reaches the client).

    The wrapper keeps the tool's signature and annotations (the SDK reads the
    arguments, the Context parameter and the output schema from them)."""

    @functools.wraps(run)
    async def bounded(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
        try:
            return await run(*args, **kwargs)
        except errors.RpcError as exc:
            return rpc_error_result(exc)

    return bounded


def describe_exit(completed: dict[str, Any]) -> str:
    status = completed.get("status")
    parts = [f"status: {status}"]
    if completed.get("signal"):
        parts.append(f"killed by signal {completed['signal']}")
    elif completed.get("exit_code") is not None:
        parts.append(f"exit code {completed['exit_code']}")
    if completed.get("duration_s") is not None:
        parts.append(f"{float(completed['duration_s']):.2f} s")
    return ", ".join(parts)


async def follow(
    connection: LocalConnection,
    execution_id: str,
    on_output: Callable[[str, str, ProgressRelay], None],
    relay: ProgressRelay,
    on_other: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Relay the execution's output as progress until ``process.completed``
    (returned); other notifications of the execution go to ``on_other``.
    Leaving any other way (the call cancelled, the stream gone) cancels the
    execution with the kill ladder."""
    finished = False
    try:
        while True:
            frame = None
            with anyio.move_on_after(relay.wait_s()):
                frame = await connection.next_frame()
            if frame is None:
                await relay.pump()
                continue
            params = frame.params
            if params.get("execution_id") == execution_id:
                if frame.method == "process.output":
                    on_output(str(params.get("type")), str(params.get("data", "")), relay)
                elif frame.method == "process.completed":
                    finished = True
                    await relay.pump(final=True)
                    return dict(params)
                elif on_other is not None:
                    on_other(frame.method, dict(params))
            await relay.pump()
    finally:
        if not finished:
            with anyio.CancelScope(shield=True):
                await cancel_abandoned(connection, execution_id)


async def cancel_abandoned(connection: LocalConnection, execution_id: str) -> None:
    try:
        await connection.request("control", {"type": "CANCEL", "execution_id": execution_id})
    except errors.InvalidState:
        return  # already ending
    except errors.RpcError as exc:
        logger.warning(
            "cancel after an abandoned MCP call failed: %s",
            exc.message,
            extra={"execution_id": execution_id},
        )
        return
    logger.info("MCP call abandoned; execution cancelled", extra={"execution_id": execution_id})


def execute_result(
    execution_id: str, completed: dict[str, Any], tails: dict[str, Tail]
) -> CallToolResult:
    """The answer of ``execute``: the exit, the end of each stream, what was dropped."""
    output = ExecuteOutput(
        execution_id=execution_id,
        status=completed["status"],
        exit_code=completed.get("exit_code"),
        signal=completed.get("signal"),
        duration_s=completed.get("duration_s"),
        stdout_tail=tails["stdout"].text(),
        stderr_tail=tails["stderr"].text(),
        stdout_bytes=int(completed.get("stdout_bytes", 0)),
        stderr_bytes=int(completed.get("stderr_bytes", 0)),
        dropped=int(completed.get("dropped", 0)),
    )
    text = [f"{describe_exit(completed)}; execution {execution_id}"]
    for name in ("stdout", "stderr"):
        tail = tails[name]
        if tail.total:
            shown = min(tail.total, tail.limit)
            text.append(f"--- {name} (last {shown} of {tail.total} characters) ---")
            text.append(tail.text().rstrip("\n"))
    if output.dropped:
        text.append(f"({output.dropped} chunks were not streamed; see the transcript tool)")
    return CallToolResult(
        content=[TextContent(type="text", text="\n".join(text))],
        structured_content=output.model_dump(mode="json"),
        is_error=output.status != "completed",
    )


def agent_result(
    execution_id: str,
    completed: dict[str, Any],
    results: list[dict[str, Any]],
    texts: Tail,
) -> CallToolResult:
    """The answer of ``agent``: its last ``result`` event (else the text it wrote)."""
    result = results[-1] if results else {}
    output = AgentOutput(
        execution_id=execution_id,
        status=completed["status"],
        exit_code=completed.get("exit_code"),
        is_error=result.get("is_error"),
        result=result.get("result"),
        session_id=result.get("session_id"),
        num_turns=result.get("num_turns"),
        cost_usd=result.get("total_cost_usd", result.get("cost_usd")),
    )
    summary = result_summary(result) if result else "no result event"
    body = result.get("result") if isinstance(result.get("result"), str) else texts.text()
    text = f"{body}\n\n[agent {summary}; {describe_exit(completed)}; execution {execution_id}]"
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=output.model_dump(mode="json"),
        is_error=bool(result.get("is_error")) or completed["status"] != "completed",
    )


def transcript_result(page: dict[str, Any]) -> CallToolResult:
    """The answer of ``transcript``: the chunks' text and where the page ends."""
    chunks = page.get("chunks") or []
    text = "".join(
        (f"[stderr] {chunk['data']}" if chunk.get("type") == "stderr" else chunk["data"])
        for chunk in chunks
    )
    note = f"\n[state {page.get('state')}; next since_seq {page.get('next_since_seq')}"
    note += "; more follows]" if page.get("more") else "; end of transcript]"
    return CallToolResult(
        content=[TextContent(type="text", text=text + note)], structured_content=page
    )


async def project_id_of(connection: LocalConnection, project: str) -> str:
    """The id of the project with id or name ``project``; NotFound otherwise."""
    try:
        found = await connection.request("project.get", {"project_id": project})
        return str(found["project_id"])
    except errors.NotFound:
        pass
    listing = await connection.request("project.list", {})
    for record in listing.get("projects", []):
        if record.get("name") == project:
            return str(record["project_id"])
    raise errors.NotFound(f"no project with id or name {project!r}")
