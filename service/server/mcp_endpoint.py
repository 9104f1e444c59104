"""The Model Context Protocol endpoint: cc-executor's tools for MCP clients
such as Claude Code, served over Streamable HTTP at ``/mcp``.

Built with the official SDK (``mcp`` v2, :class:`~mcp.server.mcpserver.MCPServer`);
stateful sessions, so a client's ``notifications/cancelled`` reaches the call it
names. Every tool runs through the JSON-RPC router on a
:class:`~service.server.local_connection.LocalConnection`, so MCP gets exactly the
WebSocket's validation, limits, allow-list, audit lines and errors. Access is
guarded by the same token and Origin middleware as the WebSocket
(:mod:`service.server.auth`); on a loopback bind the SDK's DNS-rebinding check
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
  is asked of the caller by elicitation, :mod:`service.server.mcp_approvals`).
- ``approve``: Claude Code's permission prompt tool, for the per-run
  credential of an agent run only (:mod:`service.server.mcp_approvals`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, ParamSpec

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.routing import BaseRoute

from service import __version__, errors
from service.server.local_connection import LocalConnection
from service.server.mcp_approvals import DESCRIPTION as APPROVE_DESCRIPTION
from service.server.mcp_approvals import ApproveTool, Elicitor, refuse_run_credential
from service.server.mcp_relay import (
    AgentOutput,
    ExecuteOutput,
    ProgressRelay,
    Tail,
    agent_result,
    execute_result,
    follow,
    project_id_of,
    tool,
    transcript_result,
)
from service.server.mcp_security import request_state_security, transport_security
from service.stream_json import EventLines, assistant_text, tool_calls

if TYPE_CHECKING:
    from service.server.root import Root

logger = logging.getLogger(__name__)
P = ParamSpec("P")

PATH = "/mcp"
INSTRUCTIONS = (
    "cc-executor runs commands and Claude Code agents as supervised processes on the machine "
    "where it runs. `execute` runs a command to completion and streams its output as progress; "
    "`control` pauses, resumes or cancels an execution by id; `status` and `transcript` inspect "
    "executions; `agent` runs a Claude Code agent in a registered project."
)

#: Every tool: its description and the hints MCP clients show (the handlers
#: are :class:`McpEndpoint`'s methods of the same name, and the approve tool).
TOOLS: dict[str, tuple[str, ToolAnnotations]] = {
    "execute": (
        "Run a command on the cc-executor host and wait for it to finish. "
        "Output streams as progress notifications; the result holds the status, exit code "
        "and the last part of stdout and stderr. Give argv (a list, run as is) or command "
        "(split like a shell would, but never run through a shell).",
        ToolAnnotations(destructive_hint=True, open_world_hint=True),
    ),
    "control": (
        "PAUSE (SIGSTOP the process group), RESUME (SIGCONT) or CANCEL (SIGTERM, "
        "then SIGKILL after the grace period) a running execution.",
        ToolAnnotations(destructive_hint=True),
    ),
    "status": (
        "One execution's state (with execution_id), or the 50 newest "
        "executions of this server, running and finished.",
        ToolAnnotations(read_only_hint=True),
    ),
    "transcript": (
        "A page of an execution's stored output (stdout and stderr chunks in "
        "order), after since_seq. Works for finished executions too.",
        ToolAnnotations(read_only_hint=True),
    ),
    "agent": (
        "Run the Claude Code agent of a registered project (id or name) with a "
        "prompt, resuming the project's session; streams the agent's text as progress and "
        "returns its final result.",
        ToolAnnotations(destructive_hint=True, open_world_hint=True),
    ),
    "approve": (APPROVE_DESCRIPTION, ToolAnnotations(read_only_hint=True)),
}


class McpEndpoint:
    """The MCP server of one cc-executor process: its routes and its lifespan.

    :attr:`routes` go into the Starlette app (inside the access middleware);
    :meth:`lifespan` must be entered at startup and left at shutdown (it runs
    the SDK's session manager, whose task group holds every MCP request).
    """

    def __init__(
        self,
        root: Root,
        *,
        progress_interval_s: float = 0.25,
        heartbeat_s: float = 5.0,
        progress_message_chars: int = 16 * 1024,
        tail_chars: int = 8 * 1024,
    ) -> None:
        self.root = root
        self.services = root.services
        self.progress_interval_s = progress_interval_s
        self.heartbeat_s = heartbeat_s
        self.progress_message_chars = progress_message_chars
        self.tail_chars = tail_chars
        self.server: MCPServer = MCPServer(
            "cc-executor",
            version=__version__,
            instructions=INSTRUCTIONS,
            log_level="WARNING",
            request_state_security=request_state_security(),
        )
        self._register_tools()
        settings = root.settings
        http_app = self.server.streamable_http_app(
            streamable_http_path=PATH,
            transport_security=transport_security(settings),
            host=settings.host,
        )
        self.routes: list[BaseRoute] = list(http_app.routes)

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    # --- tools -------------------------------------------------------------------

    def _register_tools(self) -> None:
        handlers: dict[str, Callable[..., Any]] = {
            "execute": self.execute,
            "control": self.control,
            "status": self.status,
            "transcript": self.transcript,
            "agent": self.agent,
            "approve": ApproveTool(self.services).__call__,
        }
        for name, (description, hints) in TOOLS.items():
            self.server.add_tool(
                handlers[name], name=name, description=description, annotations=hints
            )

    def _connection(self, ctx: Context, tool: str) -> LocalConnection:
        refuse_run_credential(self.services, ctx, tool)
        peer = "mcp"
        # The SDK raises ValueError outside a request; over HTTP ``request`` is
        # the Starlette request, whose ``client`` is None on some transports.
        with contextlib.suppress(ValueError):
            request = ctx.request_context.request
            client = getattr(request, "client", None)
            if client is not None:
                peer = f"{client.host}:{client.port}"
        return LocalConnection(self.root, peer, kind=f"mcp-{tool}")

    @tool
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
            started = await connection.request("execute", params)
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
        return execute_result(execution_id, completed, tails)

    async def _follow(
        self,
        ctx: Context,
        connection: LocalConnection,
        execution_id: str,
        on_output: Callable[[str, str, ProgressRelay], None],
        on_other: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        relay = ProgressRelay(
            ctx, self.progress_interval_s, self.heartbeat_s, self.progress_message_chars
        )
        return await follow(connection, execution_id, on_output, relay, on_other)

    @tool
    async def control(
        self,
        ctx: Context,
        execution_id: Annotated[str, Field(description="the execution to control")],
        action: Annotated[Literal["PAUSE", "RESUME", "CANCEL"], Field(description="what to do")],
    ) -> CallToolResult:
        async with self._connection(ctx, "control") as connection:
            result = await connection.request(
                "control", {"type": action, "execution_id": execution_id}
            )
        return CallToolResult(
            content=[TextContent(type="text", text=f"{execution_id}: {result['status']}")],
            structured_content=result,
        )

    @tool
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
            snapshot = await connection.request("status", {"execution_id": execution_id})
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

    @tool
    async def transcript(
        self,
        ctx: Context,
        execution_id: Annotated[str, Field(description="the execution")],
        since_seq: Annotated[int, Field(description="return chunks after this seq", ge=0)] = 0,
        limit: Annotated[int, Field(description="chunks in this page", ge=1, le=10000)] = 200,
    ) -> CallToolResult:
        async with self._connection(ctx, "transcript") as connection:
            page = await connection.request(
                "transcript.get",
                {"execution_id": execution_id, "since_seq": since_seq, "limit": limit},
            )
        return transcript_result(page)

    @tool
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
            project_id = await project_id_of(connection, project)
            params: dict[str, Any] = {"project_id": project_id, "prompt": prompt}
            params.update(model=model, max_turns=max_turns, timeout=timeout, env=env)
            params.update(approvals=approvals)
            params = {key: value for key, value in params.items() if value is not None}
            if new_session:
                params["resume"] = False
            started = await connection.request("agent.execute", params)
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
        return agent_result(execution_id, completed, results, texts)
