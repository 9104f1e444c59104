"""One headless turn of fake-claude, played by the scenario the prompt (or
``$FAKE_CLAUDE_SCENARIO``) names."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

from service.fake_claude.events import Printer, assistant, tool_result, usage

VERSION = "2.0.0 (Claude Code; fake-claude test double)"
DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
TOOLS = ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "WebFetch", "TodoWrite"]
SCENARIO_RE = re.compile(r"\bfake:([a-z][a-z-]*)(?:=(\S+))?")
SCENARIOS = (
    "success",
    "error",
    "slow",
    "bigline",
    "flood",
    "crash",
    "noresult",
    "ignore-term",
    "hang",
    "permission",
)


def pick_scenario(prompt: str) -> tuple[str, str | None]:
    match = SCENARIO_RE.search(prompt)
    if match:
        return match.group(1), match.group(2)
    configured = os.environ.get("FAKE_CLAUDE_SCENARIO", "").strip()
    if configured:
        name, _, value = configured.partition("=")
        return name, value or None
    return "success", None


def sleep_forever() -> NoReturn:
    while True:
        time.sleep(3600)


class Run:
    """One headless turn: the events of the chosen scenario."""

    def __init__(self, args: argparse.Namespace, session_id: str, history: list[str]) -> None:
        self.args = args
        self.session_id = session_id
        self.history = history
        self.model = args.model or DEFAULT_MODEL
        self.printer = Printer(args.output_format, args.verbose)
        self.started = time.monotonic()
        self.cwd = os.getcwd()
        self.turns = 0

    def init(self) -> None:
        if self.args.dangerously_skip_permissions:
            mode = "bypassPermissions"
        else:
            mode = self.args.permission_mode or "default"
        tools = self.args.allowedTools or TOOLS
        self.printer.event(
            {
                "type": "system",
                "subtype": "init",
                "cwd": self.cwd,
                "session_id": self.session_id,
                "tools": [t for item in tools for t in item.replace(",", " ").split()],
                "mcp_servers": self.mcp_servers(),
                "model": self.model,
                "permissionMode": mode,
                "slash_commands": ["compact", "context", "cost", "init", "review"],
                "apiKeySource": "none",
                "claude_code_version": VERSION.split()[0],
                "output_style": "default",
                "agents": ["general-purpose"],
                "uuid": str(uuid.uuid4()),
            }
        )

    def mcp_servers(self) -> list[dict[str, str]]:
        """The servers of ``--mcp-config`` files, as the real init lists them."""
        names: list[str] = []
        for value in self.args.mcp_config:
            try:
                inline = value.lstrip().startswith("{")
                text = value if inline else Path(value).read_text(encoding="utf-8")
                names += list(json.loads(text).get("mcpServers", {}))
            except (OSError, ValueError, AttributeError):
                continue  # the permission scenario reports a bad config
        return [{"name": name, "status": "connected"} for name in names]

    def say(self, content: list[dict[str, Any]]) -> None:
        self.turns += 1
        self.printer.event(assistant(self.session_id, self.model, content))

    def finish(
        self,
        subtype: str,
        text: str | None,
        errors: list[str] | None = None,
        denials: list[dict[str, Any]] | None = None,
    ) -> int:
        is_error = subtype != "success"
        event: dict[str, Any] = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "duration_api_ms": int((time.monotonic() - self.started) * 800),
            "num_turns": max(self.turns, 1),
            "session_id": self.session_id,
            "total_cost_usd": round(0.0012 * max(self.turns, 1), 6),
            "usage": usage(8 * max(self.turns, 1)),
            "modelUsage": {},
            "permission_denials": denials or [],
            "uuid": str(uuid.uuid4()),
        }
        if text is not None:
            event["result"] = text
        if errors:
            event["errors"] = errors
        self.printer.result(event)
        return 1 if is_error else 0

    def reply(self, prompt: str) -> str:
        text = f"Echo: {prompt}"
        if self.history:
            text += " (I remember: " + " | ".join(self.history) + ")"
        return text

    def within_turns(self, needed: int) -> bool:
        limit = self.args.max_turns
        return limit is None or needed <= limit

    def play(self, prompt: str) -> int:
        name, value = pick_scenario(prompt)
        if name == "ignore-term":
            # Before init: whoever saw init may already be sending SIGTERM.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.init()
        if name in ("hang", "ignore-term"):
            sleep_forever()
        if name == "slow":
            time.sleep(float(value or 2))
        if name == "error":
            self.say([{"type": "text", "text": "Something went wrong."}])
            return self.finish("error_during_execution", None, ["fake: the scenario failed"])
        if name == "crash":
            self.say([{"type": "text", "text": "Working on it."}])
            sys.stdout.write('{"type":"assistant","message":{"content":[{"type":"te')
            sys.stdout.flush()
            sys.stderr.write("TypeError: fake crash\n    at main (cli.js:1:1)\n")
            sys.stderr.flush()
            os._exit(1)
        if name == "noresult":
            self.say([{"type": "text", "text": "I will stop without a result."}])
            return 0
        if name == "bigline":
            size = int(value or 5_000_000)
            self.say([{"type": "text", "text": "x" * size}])
            return self.finish("success", self.reply(prompt))
        if name == "flood":
            for number in range(int(value or 100)):
                self.say([{"type": "text", "text": f"{number:08d}" + "y" * (16 * 1024 - 8)}])
                time.sleep(0.003)  # paced like a model, not a burst
            return self.finish("success", self.reply(prompt))
        if name == "permission":
            return self.ask_permission(value or "Bash", prompt)
        if name not in SCENARIOS:
            self.say([{"type": "text", "text": f"unknown fake scenario {name!r}"}])
            return self.finish("error_during_execution", None, [f"unknown scenario {name}"])
        if not self.within_turns(2):
            self.turns = 2
            return self.finish(
                "error_max_turns",
                None,
                [f"Reached maximum number of turns ({self.args.max_turns})"],
            )
        tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
        self.say(
            [
                {"type": "text", "text": "Let me look at the project."},
                {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "ls"}},
            ]
        )
        listing = "\n".join(sorted(os.listdir(self.cwd)))
        self.printer.event(tool_result(self.session_id, tool_id, listing))
        answer = self.reply(prompt)
        self.say([{"type": "text", "text": answer}])
        return self.finish("success", answer)

    def ask_permission(self, tool: str, prompt: str) -> int:
        """A tool use that needs permission, decided by the permission prompt
        tool (or denied without one, as the real CLI does in ``-p`` mode)."""
        # Imported here: the MCP SDK takes about a second to import, which every
        # other scenario would pay for nothing.
        from service.fake_claude import permission

        tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
        tool_input = permission.plausible_input(tool, self.cwd)
        self.say(
            [
                {"type": "text", "text": f"I need to use {tool}."},
                {"type": "tool_use", "id": tool_id, "name": tool, "input": tool_input},
            ]
        )
        prompt_tool = self.args.permission_prompt_tool
        if prompt_tool is None:
            answer = permission.Answer(
                "deny",
                {},
                f"Claude requested permissions to use {tool}, but you haven't granted it yet.",
            )
        else:
            try:
                answer = permission.ask(
                    prompt_tool, self.args.mcp_config, tool, tool_input, tool_id
                )
            except permission.PromptToolError as exc:
                self.printer.event(tool_result(self.session_id, tool_id, str(exc), is_error=True))
                return self.finish("error_during_execution", None, [str(exc)])
        if answer.behavior == "allow":
            used = json.dumps(answer.updated_input, sort_keys=True)
            content = f"{tool} ran with {used}"
            if tool == "Bash":
                content += "\n" + "\n".join(sorted(os.listdir(self.cwd)))
            self.printer.event(tool_result(self.session_id, tool_id, content))
            text = f"{tool} was allowed and ran with {used}."
            self.say([{"type": "text", "text": text}])
            return self.finish("success", text)
        self.printer.event(tool_result(self.session_id, tool_id, answer.message, is_error=True))
        text = f"The {tool} tool use was denied: {answer.message}"
        self.say([{"type": "text", "text": text}])
        denial = {"tool_name": tool, "tool_use_id": tool_id, "tool_input": tool_input}
        return self.finish("success", text, denials=[denial])
