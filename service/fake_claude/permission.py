"""fake-claude's permission prompt: ask the MCP tool named by
``--permission-prompt-tool`` (``mcp__SERVER__TOOL``), on the server ``SERVER``
of ``--mcp-config``, as the real CLI does: one ``tools/call`` over Streamable
HTTP with the official MCP SDK client, arguments ``{tool_name, input,
tool_use_id}``, answered by one text content holding
``{"behavior": "allow", "updatedInput": {...}}`` or ``{"behavior": "deny",
"message": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent


class PromptToolError(Exception):
    """The permission prompt tool could not be asked, or answered nonsense."""


@dataclass(frozen=True)
class Answer:
    behavior: str
    updated_input: dict[str, Any]
    message: str


def plausible_input(tool: str, cwd: str) -> dict[str, Any]:
    """What the model would plausibly ask ``tool`` to do."""
    if tool == "Bash":
        return {"command": "ls", "description": "List files"}
    if tool == "Write":
        return {"file_path": os.path.join(cwd, "fake-claude.txt"), "content": "hello\n"}
    if tool in ("Read", "Edit"):
        return {"file_path": os.path.join(cwd, "README.md")}
    if tool == "WebFetch":
        return {"url": "https://example.com", "prompt": "summarise"}
    return {}


def load_servers(configs: list[str]) -> dict[str, dict[str, Any]]:
    """The ``mcpServers`` of every ``--mcp-config`` value (a file or inline JSON)."""
    servers: dict[str, dict[str, Any]] = {}
    for value in configs:
        text = value
        if not value.lstrip().startswith("{"):
            try:
                with open(value, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise PromptToolError(f"cannot read MCP config {value}: {exc}") from None
        try:
            servers.update(json.loads(text).get("mcpServers", {}))
        except (ValueError, AttributeError) as exc:
            raise PromptToolError(f"invalid MCP config {value}: {exc}") from None
    return servers


def split_tool(name: str) -> tuple[str, str]:
    parts = name.split("__")
    if len(parts) != 3 or parts[0] != "mcp":
        raise PromptToolError(f"permission prompt tool {name!r} is not mcp__SERVER__TOOL")
    return parts[1], parts[2]


async def call(server: dict[str, Any], tool: str, arguments: dict[str, Any]) -> str:
    if server.get("type") != "http" or "url" not in server:
        raise PromptToolError("only http MCP servers are supported by fake-claude")
    headers = {str(k): str(v) for k, v in (server.get("headers") or {}).items()}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None))
    async with Client(streamable_http_client(server["url"], http_client=http)) as client:
        result = await client.call_tool(tool, arguments)
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if result.is_error:
        raise PromptToolError("; ".join(texts) or "the permission prompt tool failed")
    if len(texts) != 1:
        raise PromptToolError(f"expected one text content, got {len(result.content)} blocks")
    return texts[0]


def ask(
    prompt_tool: str,
    configs: list[str],
    tool_name: str,
    tool_input: dict[str, Any],
    tool_use_id: str,
) -> Answer:
    """Ask the permission prompt tool; PromptToolError when that fails."""
    server_name, tool = split_tool(prompt_tool)
    server = load_servers(configs).get(server_name)
    if server is None:
        raise PromptToolError(f"MCP server {server_name!r} is not in --mcp-config")
    arguments = {"tool_name": tool_name, "input": tool_input, "tool_use_id": tool_use_id}
    try:
        text = asyncio.run(call(server, tool, arguments))
    except PromptToolError:
        raise
    except Exception as exc:
        raise PromptToolError(f"permission prompt tool call failed: {exc!r}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        raise PromptToolError(f"permission prompt tool answered non-JSON: {text!r}") from None
    behavior = answer.get("behavior") if isinstance(answer, dict) else None
    if behavior == "allow" and isinstance(answer.get("updatedInput"), dict):
        return Answer("allow", answer["updatedInput"], "")
    if behavior == "deny" and isinstance(answer.get("message"), str):
        return Answer("deny", {}, answer["message"])
    raise PromptToolError(f"permission prompt tool answered an invalid decision: {text!r}")
