"""The Model Context Protocol endpoint: cc-executor's tools for MCP clients
such as Claude Code, served over Streamable HTTP at ``/mcp``.

Built with the official SDK (``mcp`` v2, :class:`~mcp.server.mcpserver.MCPServer`);
stateful sessions, so a client's ``notifications/cancelled`` reaches the call it
names. Every tool runs through the JSON-RPC router on a
:class:`~service.local_connection.LocalConnection`, so MCP gets exactly the
WebSocket's validation, limits, allow-list, audit lines and errors. Access is
guarded by the same token and Origin middleware as the WebSocket
(:mod:`service.auth`); on a loopback bind the SDK's DNS-rebinding check
(Host header) is on as well.

Tools:

- ``execute``: run a command; its output streams to the caller as
  ``notifications/progress`` (the output is the message, at most one every
  ``progress_interval_s``, a silent heartbeat every ``heartbeat_s`` so that
  client-side request timeouts that reset on progress never fire); the result
  is the status, exit code and the tails of stdout and stderr, with
  ``structuredContent`` ``{execution_id, status, exit_code, ...}``. A cancelled
  call (``notifications/cancelled`` or a closed stream) cancels the process with
  the kill ladder.
- ``control`` (PAUSE, RESUME, CANCEL), ``status``, ``transcript`` (a page of a
  stored transcript) and ``agent`` (a Claude Code agent run in a project,
  streamed like ``execute``; with ``approvals: "clients"`` each tool permission
  is asked of the caller by elicitation, :mod:`service.mcp_approvals`).
- ``approve``: Claude Code's permission prompt tool, for the per-run
  credential of an agent run only (:mod:`service.mcp_approvals`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from service import __version__, errors
from service.auth import is_loopback_host
from service.local_connection import LocalConnection
from service.mcp_approvals import DESCRIPTION as APPROVE_DESCRIPTION
from service.mcp_approvals import ApproveTool, Elicitor, refuse_run_credential
from service.stream_json import EventLines, assistant_text, result_summary, tool_calls

if TYPE_CHECKING:
    from service.services import Services

logger = logging.getLogger(__name__)

PATH = "/mcp"
INSTRUCTIONS = (
    "cc-executor runs commands and Claude Code agents as supervised processes on the machine "
    "where it runs. `execute` runs a command to completion and streams its output as progress; "
    "`control` pauses, resumes or cancels an execution by id; `status` and `transcript` inspect "
    "executions; `agent` runs a Claude Code agent in a registered project."
)

#: Final states of an execution.
FINAL = frozenset({"completed", "failed", "cancelled", "timed_out", "lost"})


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


class McpEndpoint:
    """The MCP server of one cc-executor process: its routes and its lifespan.

    :attr:`routes` go into the Starlette app (inside the access middleware);
    :meth:`lifespan` must be entered at startup and left at shutdown (it runs
    the SDK's session manager, whose task group holds every MCP request).
    """

    def __init__(
        self,
        services: Services,
        *,
        progress_interval_s: float = 0.25,
        heartbeat_s: float = 5.0,
        progress_message_chars: int = 16 * 1024,
        tail_chars: int = 8 * 1024,
    ) -> None:
        self.services = services
        self.progress_interval_s = progress_interval_s
        self.heartbeat_s = heartbeat_s
        self.progress_message_chars = progress_message_chars
        self.tail_chars = tail_chars
        self.server: MCPServer = MCPServer(
            "cc-executor", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
        )
        self._register_tools()
        settings = services.settings
        http_app = self.server.streamable_http_app(
            streamable_http_path=PATH,
            transport_security=self._transport_security(),
            host=settings.host,
        )
        self.routes: list[BaseRoute] = list(http_app.routes)

    def _transport_security(self) -> TransportSecuritySettings:
        """The SDK's Host/Origin check, on a loopback bind only: there it closes
        DNS rebinding (a foreign name resolving to 127.0.0.1). Elsewhere the
        token and our Origin check guard the endpoint, as for the WebSocket."""
        settings = self.services.settings
        if not is_loopback_host(settings.host):
            return TransportSecuritySettings(enable_dns_rebinding_protection=False)
        names = ["127.0.0.1", "localhost", "[::1]"]
        origins = [f"{scheme}://{name}:*" for scheme in ("http", "https") for name in names]
        origins += [f"{scheme}://{name}" for scheme in ("http", "https") for name in names]
        return TransportSecuritySettings(
            enable_dns_rebinding_protection="*" not in settings.allowed_origins,
            allowed_hosts=[f"{name}:*" for name in names] + names,
            allowed_origins=origins + list(settings.allowed_origins),
        )

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    # --- tools -------------------------------------------------------------------

    def _register_tools(self) -> None:
        server = self.server
        server.add_tool(
            self.execute,
            name="execute",
            description="Run a command on the cc-executor host and wait for it to finish. "
            "Output streams as progress notifications; the result holds the status, exit code "
            "and the last part of stdout and stderr. Give argv (a list, run as is) or command "
            "(split like a shell would, but never run through a shell).",
            annotations=ToolAnnotations(destructive_hint=True, open_world_hint=True),
        )
        server.add_tool(
            self.control,
            name="control",
            description="PAUSE (SIGSTOP the process group), RESUME (SIGCONT) or CANCEL (SIGTERM, "
            "then SIGKILL after the grace period) a running execution.",
            annotations=ToolAnnotations(destructive_hint=True),
        )
        server.add_tool(
            self.status,
            name="status",
            description="One execution's state (with execution_id), or the 50 newest "
            "executions of this server, running and finished.",
            annotations=ToolAnnotations(read_only_hint=True),
        )
        server.add_tool(
            self.transcript,
            name="transcript",
            description="A page of an execution's stored output (stdout and stderr chunks in "
            "order), after since_seq. Works for finished executions too.",
            annotations=ToolAnnotations(read_only_hint=True),
        )
        server.add_tool(
            self.agent,
            name="agent",
            description="Run the Claude Code agent of a registered project (id or name) with a "
            "prompt, resuming the project's session; streams the agent's text as progress and "
            "returns its final result.",
            annotations=ToolAnnotations(destructive_hint=True, open_world_hint=True),
        )
        server.add_tool(
            ApproveTool(self.services).__call__,
            name="approve",
            description=APPROVE_DESCRIPTION,
            annotations=ToolAnnotations(read_only_hint=True),
        )

    def _connection(self, ctx: Context, tool: str) -> LocalConnection:
        refuse_run_credential(self.services, ctx, tool)
        peer = "mcp"
        with contextlib.suppress(Exception):
            request = ctx.request_context.request
            client = getattr(request, "client", None)
            if client is not None:
                peer = f"{client.host}:{client.port}"
        return LocalConnection(self.services, peer, kind=f"mcp-{tool}")

    async def execute(
        self,
        ctx: Context,
        argv: Annotated[
            list[str] | None, Field(description="program and arguments, run as given")
        ] = None,
        command: Annotated[
            str | None, Field(description="a command line, split into words like a shell would")
        ] = None,
        cwd: Annotated[str | None, Field(description="working directory")] = None,
        timeout: Annotated[  # noqa: ASYNC109 (the tool's argument, not an await deadline)
            float | None, Field(description="wall-clock limit in seconds", gt=0)
        ] = None,
        env: Annotated[
            dict[str, str] | None, Field(description="extra environment variables")
        ] = None,
        stdin: Annotated[
            str | None, Field(description="text to write to the command's stdin, then EOF")
        ] = None,
        shell: Annotated[
            bool,
            Field(description="run command through /bin/sh -c (only where the server allows it)"),
        ] = False,
    ) -> Annotated[CallToolResult, ExecuteOutput]:
        params: dict[str, Any] = {"argv": argv, "command": command, "cwd": cwd}
        params.update(timeout=timeout, env=env)
        params = {key: value for key, value in params.items() if value is not None}
        if shell:
            params["shell"] = True
        if stdin is not None:
            params["stdin"] = True
        async with self._connection(ctx, "execute") as connection:
            try:
                started = await connection.request("execute", params)
            except errors.RpcError as exc:
                return rpc_error_result(exc)
            execution_id = started["execution_id"]
            tails = {"stdout": Tail(self.tail_chars), "stderr": Tail(self.tail_chars)}

            def on_output(stream: str, data: str, relay: ProgressRelay) -> None:
                tails.get(stream, tails["stdout"]).add(data)
                relay.add(data)

            if stdin is not None:
                with contextlib.suppress(errors.RpcError):
                    await connection.request(
                        "input", {"execution_id": execution_id, "data": stdin, "eof": True}
                    )
            completed = await self._follow(ctx, connection, execution_id, on_output)
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
                shown = min(tail.total, self.tail_chars)
                text.append(f"--- {name} (last {shown} of {tail.total} characters) ---")
                text.append(tail.text().rstrip("\n"))
        if output.dropped:
            text.append(f"({output.dropped} chunks were not streamed; see the transcript tool)")
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(text))],
            structured_content=output.model_dump(mode="json"),
            is_error=output.status != "completed",
        )

    async def _follow(
        self,
        ctx: Context,
        connection: LocalConnection,
        execution_id: str,
        on_output: Callable[[str, str, ProgressRelay], None],
        on_other: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Relay the execution's output as progress until ``process.completed``
        (returned); other notifications of the execution go to ``on_other``.
        Leaving any other way (the call cancelled, the stream gone) cancels the
        execution with the kill ladder."""
        relay = ProgressRelay(
            ctx, self.progress_interval_s, self.heartbeat_s, self.progress_message_chars
        )
        finished = False
        try:
            while True:
                frame = None
                with anyio.move_on_after(relay.wait_s()):
                    frame = await connection.outbox.get()
                if frame is None:
                    await relay.pump()
                    continue
                for message in LocalConnection.decode(frame):
                    params = message.get("params") or {}
                    if params.get("execution_id") != execution_id:
                        continue
                    if message["method"] == "process.output":
                        on_output(str(params.get("type")), str(params.get("data", "")), relay)
                    elif message["method"] == "process.completed":
                        finished = True
                        await relay.pump(final=True)
                        return dict(params)
                    elif on_other is not None:
                        on_other(str(message["method"]), dict(params))
                await relay.pump()
        finally:
            if not finished:
                with anyio.CancelScope(shield=True):
                    await self._cancel(connection, execution_id)

    async def _cancel(self, connection: LocalConnection, execution_id: str) -> None:
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

    async def control(
        self,
        ctx: Context,
        execution_id: Annotated[str, Field(description="the execution to control")],
        action: Annotated[Literal["PAUSE", "RESUME", "CANCEL"], Field(description="what to do")],
    ) -> CallToolResult:
        async with self._connection(ctx, "control") as connection:
            try:
                result = await connection.request(
                    "control", {"type": action, "execution_id": execution_id}
                )
            except errors.RpcError as exc:
                return rpc_error_result(exc)
        return CallToolResult(
            content=[TextContent(type="text", text=f"{execution_id}: {result['status']}")],
            structured_content=result,
        )

    async def status(
        self,
        ctx: Context,
        execution_id: Annotated[
            str | None, Field(description="one execution; omit for the 50 newest")
        ] = None,
    ) -> CallToolResult:
        if execution_id is None:
            executions = await self._recent_executions(ctx)
            lines = [
                f"{e['execution_id']}  {e['state']:<9}  pid {e.get('pid')}  {e.get('command')}"
                for e in executions
            ]
            return CallToolResult(
                content=[TextContent(type="text", text="\n".join(lines) or "no executions")],
                structured_content={"executions": executions},
            )
        async with self._connection(ctx, "status") as connection:
            try:
                snapshot = await connection.request("status", {"execution_id": execution_id})
            except errors.RpcError as exc:
                return rpc_error_result(exc)
        summary = (
            f"{execution_id}: {snapshot.get('state')}, pid {snapshot.get('pid')}, "
            f"exit code {snapshot.get('exit_code')}, signal {snapshot.get('signal')}, "
            f"{snapshot.get('stdout_bytes')} bytes stdout, {snapshot.get('stderr_bytes')} "
            f"bytes stderr, command: {snapshot.get('command')}"
        )
        return CallToolResult(
            content=[TextContent(type="text", text=summary)], structured_content=snapshot
        )

    async def _recent_executions(self, ctx: Context) -> list[dict[str, Any]]:
        """The 50 newest executions from the store (``executions.list``), or the
        supervisor's live and remembered ones when the store is off."""
        async with self._connection(ctx, "status") as connection:
            try:
                page = await connection.request("executions.list", {"limit": 50})
                return list(page["executions"])
            except (errors.InvalidState, errors.MethodNotFound):
                pass
        supervisor = self.services.supervisor
        executions = [e.snapshot() for e in supervisor.live.values()]
        executions += [e.snapshot() for e in reversed(supervisor.finished.values())]
        return executions

    async def transcript(
        self,
        ctx: Context,
        execution_id: Annotated[str, Field(description="the execution")],
        since_seq: Annotated[int, Field(description="return chunks after this seq", ge=0)] = 0,
        limit: Annotated[int, Field(description="chunks in this page", ge=1, le=10000)] = 200,
    ) -> CallToolResult:
        async with self._connection(ctx, "transcript") as connection:
            try:
                page = await connection.request(
                    "transcript.get",
                    {"execution_id": execution_id, "since_seq": since_seq, "limit": limit},
                )
            except errors.RpcError as exc:
                return rpc_error_result(exc)
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

    async def agent(
        self,
        ctx: Context,
        project: Annotated[str, Field(description="project id or name")],
        prompt: Annotated[str, Field(description="the prompt, passed to the CLI as one argument")],
        model: Annotated[str | None, Field(description="model for this run")] = None,
        max_turns: Annotated[int | None, Field(description="turn limit", ge=1)] = None,
        timeout: Annotated[  # noqa: ASYNC109 (the tool's argument, not an await deadline)
            float | None, Field(description="wall-clock seconds", gt=0)
        ] = None,
        new_session: Annotated[
            bool, Field(description="start a new Claude session instead of resuming")
        ] = False,
        env: Annotated[
            dict[str, str] | None, Field(description="extra environment variables")
        ] = None,
        approvals: Annotated[
            Literal["none", "clients"] | None,
            Field(
                description="clients: ask you (by elicitation) before each tool needing "
                "permission; none: such tools are denied. Default: the server's setting."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, AgentOutput]:
        async with self._connection(ctx, "agent") as connection:
            try:
                project_id = await self._project_id(connection, project)
                params: dict[str, Any] = {"project_id": project_id, "prompt": prompt}
                params.update(model=model, max_turns=max_turns, timeout=timeout, env=env)
                params.update(approvals=approvals)
                params = {key: value for key, value in params.items() if value is not None}
                if new_session:
                    params["resume"] = False
                started = await connection.request("agent.execute", params)
            except errors.RpcError as exc:
                return rpc_error_result(exc)
            execution_id = started["execution_id"]
            lines = EventLines()
            texts = Tail(self.tail_chars)
            results: list[dict[str, Any]] = []

            def on_output(stream: str, data: str, relay: ProgressRelay) -> None:
                if stream != "stdout":
                    relay.add(data)
                    return
                for event in lines.feed(data):
                    text = assistant_text(event)
                    if text:
                        texts.add(text.rstrip("\n") + "\n")
                        relay.add(text.rstrip("\n") + "\n")
                    for name in tool_calls(event):
                        relay.add(f"[tool {name}]\n")
                    if event.get("type") == "result":
                        results.append(event)

            elicitor = Elicitor(ctx, connection)
            async with anyio.create_task_group() as asking:

                def on_other(method: str, params: dict[str, Any]) -> None:
                    if method == "agent.permission":
                        asking.start_soon(elicitor.answer, params)

                completed = await self._follow(ctx, connection, execution_id, on_output, on_other)
                asking.cancel_scope.cancel()  # the run ended: its requests are resolved
            results += [e for e in lines.finish() if e.get("type") == "result"]
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

    async def _project_id(self, connection: LocalConnection, project: str) -> str:
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
