"""The Claude Code command line of one agent run, built without a shell.

``claude -p --output-format stream-json --verbose [EXTRA...] [--resume=ID]
[--model=M] [--max-turns=N] [--mcp-config=FILE --permission-prompt-tool=TOOL]
[...] -- PROMPT``.

The real CLI parses options with commander.js: ``-p`` is a flag, the prompt is
a positional argument, and any word starting with ``-`` before ``--`` is an
option (``error: unknown option``), while ``--allowedTools`` swallows every
following word. So the prompt always comes last, after ``--``, as one argv
element: whatever it holds (a leading dash, quotes, newlines, ``; rm -rf /``)
it reaches the CLI intact and can never become a flag. Every option value is
attached with ``=`` so that it cannot be read as the next option either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """What a client may choose for one run (validated by the params model)."""

    prompt: str
    model: str | None = None
    max_turns: int | None = None
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    permission_mode: str | None = None
    append_system_prompt: str | None = None
    #: Set by the server for ``approvals: "clients"`` (not by clients): the MCP
    #: tool that decides permissions, and the path of the config naming it.
    permission_prompt_tool: str | None = None
    mcp_config: str | None = None


def agent_argv(
    claude_bin: str,
    extra_args: Sequence[str],
    options: AgentOptions,
    session_id: str | None,
) -> list[str]:
    """The argv of one run; ``session_id`` (when set) is resumed."""
    argv = [claude_bin, "-p", "--output-format", "stream-json", "--verbose", *extra_args]
    if session_id:
        argv.append(f"--resume={session_id}")
    if options.model:
        argv.append(f"--model={options.model}")
    if options.max_turns is not None:
        argv.append(f"--max-turns={options.max_turns}")
    if options.permission_mode:
        argv.append(f"--permission-mode={options.permission_mode}")
    if options.append_system_prompt is not None:
        argv.append(f"--append-system-prompt={options.append_system_prompt}")
    if options.mcp_config is not None:
        argv.append(f"--mcp-config={options.mcp_config}")
    if options.permission_prompt_tool is not None:
        argv.append(f"--permission-prompt-tool={options.permission_prompt_tool}")
    if options.allowed_tools:
        argv.append("--allowedTools=" + ",".join(options.allowed_tools))
    if options.disallowed_tools:
        argv.append("--disallowedTools=" + ",".join(options.disallowed_tools))
    argv += ["--", options.prompt]
    return argv
