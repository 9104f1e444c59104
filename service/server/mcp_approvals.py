"""Tool permissions over MCP: the ``approve`` tool and elicitation for ``agent``.

``approve`` is Claude Code's permission prompt tool (``--permission-prompt-tool
mcp__cc_executor__approve``). Its input is what the CLI sends: ``tool_name``,
``input`` (the tool's input) and ``tool_use_id``. It answers with one text
content holding JSON, as the CLI expects: ``{"behavior": "allow",
"updatedInput": {...}}`` or ``{"behavior": "deny", "message": "..."}``. Only
the per-run credential of a live run may call it (``Authorization: Bearer``;
:mod:`service.projects.grants`), and that credential may call nothing else
(:func:`refuse_run_credential`, checked by every other tool).

The ``agent`` tool's caller is blocked on its call, so it cannot call a second
tool to decide. :class:`Elicitor` asks it with ``elicitation/create`` instead
(a form: ``allow`` yes/no and an optional ``message``) and sends the answer as
``agent.decide``; a client that did not declare the elicitation capability
gets every request denied, with a message saying so.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from service import errors
from service.projects.grants import Grant

if TYPE_CHECKING:
    from service.projects.approvals import Approvals
    from service.server.local_connection import LocalConnection
    from service.services import Services

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Claude Code's permission prompt tool (--permission-prompt-tool "
    "mcp__cc_executor__approve): asks the clients of the agent run whether it may use a tool. "
    "Callable only with the credential cc-executor minted for that run."
)
NO_ELICITATION = "denied: the MCP client does not support elicitation"
#: Characters of a tool's input shown in an elicitation message.
INPUT_SUMMARY_CHARS = 500


def bearer(ctx: Context) -> str | None:
    headers = ctx.headers or {}
    value = headers.get("authorization") or headers.get("Authorization")
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def refuse_run_credential(services: Services, ctx: Context, tool: str) -> None:
    """Raise ToolError when the call presents a per-run credential (live or
    revoked): it is valid for ``approve`` only."""
    token = bearer(ctx)
    if token is not None and services.projects.approvals.grants.is_run_token(token):
        logger.warning("per-run credential refused for tool %s", tool, extra={"tool": tool})
        raise ToolError(f"this credential is valid only for the approve tool, not for {tool}")


class ApproveTool:
    """The ``approve`` tool of one server."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _grant(self, ctx: Context) -> tuple[Approvals, Grant]:
        approvals = self.services.projects.approvals
        token = bearer(ctx)
        grant = approvals.grants.find(token) if token else None
        if grant is None:
            logger.warning("approve refused: no live per-run credential")
            raise ToolError(
                "approve needs the per-run credential of a running agent "
                "(it is refused once the run has ended)"
            )
        return approvals, grant

    async def __call__(
        self,
        ctx: Context,
        tool_name: Annotated[str, Field(description="the tool asking for permission")],
        input: Annotated[  # the name Claude Code sends
            dict[str, Any], Field(description="the tool's input")
        ],
        tool_use_id: Annotated[str | None, Field(description="the tool use's id")] = None,
    ) -> CallToolResult:
        approvals, grant = self._grant(ctx)
        try:
            request = await approvals.ask(grant, tool_name, input, tool_use_id)
        except errors.RpcError as exc:
            raise ToolError(exc.message) from None
        answer = request.tool_answer()
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(answer))])


class Decision(BaseModel):
    """The elicitation form for one permission request."""

    allow: bool = Field(description="Allow this tool use?")
    message: str = Field("", description="Why not (shown to the agent when denied)")


def summary(params: dict[str, Any]) -> str:
    text = json.dumps(params.get("input"), ensure_ascii=False)
    if len(text) > INPUT_SUMMARY_CHARS:
        text = text[:INPUT_SUMMARY_CHARS] + "..."
    return f"The agent asks to use {params.get('tool_name')} with {text}. Allow it?"


class Elicitor:
    """Answers ``agent.permission`` of one ``agent`` call by asking its MCP client."""

    def __init__(self, ctx: Context, connection: LocalConnection) -> None:
        self.ctx = ctx
        self.connection = connection

    def supported(self) -> bool:
        capabilities = self.ctx.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return False
        # elicitation/create is a server-initiated request: it needs a session
        # with a back-channel (the handshake-era protocol; 2026-07-28 clients
        # have none and get the denial).
        return bool(self.ctx.session.can_send_request)

    async def answer(self, params: dict[str, Any]) -> None:
        """Ask, then decide; a request decided meanwhile by another client is left."""
        decision: dict[str, Any] = {"request_id": params["request_id"]}
        if not self.supported():
            decision.update(behavior="deny", message=NO_ELICITATION)
        else:
            try:
                result = await self.ctx.elicit(summary(params), Decision)
            except Exception as exc:  # a failed elicitation must not leave the agent waiting
                logger.warning("elicitation failed: %s", exc)
                decision.update(behavior="deny", message=f"denied: elicitation failed: {exc}")
            else:
                if isinstance(result, AcceptedElicitation) and result.data.allow:
                    decision["behavior"] = "allow"
                elif isinstance(result, AcceptedElicitation):
                    decision.update(behavior="deny", message=result.data.message or None)
                else:
                    decision.update(
                        behavior="deny", message=f"denied: the MCP client chose {result.action}"
                    )
        try:
            await self.connection.request("agent.decide", decision)
        except errors.InvalidState:
            pass  # decided elsewhere (a WebSocket client, the timeout) first
        except errors.RpcError as exc:
            logger.warning("agent.decide from the MCP agent tool failed: %s", exc.message)
