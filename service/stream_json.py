"""Reading Claude Code's ``--output-format stream-json`` as it streams by, for
people: the assistant's text, the tools it calls, and a one-line summary of
the ``result`` event. Used by ``cc-executor agent`` and the MCP ``agent`` tool;
pure functions plus one small line buffer, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson


class EventLines:
    """Split streamed stdout text into JSON events, one per complete line.

    Lines that are not JSON objects are skipped; a line longer than
    ``max_line_bytes`` is dropped whole (it could not parse once cut).
    """

    def __init__(self, max_line_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = ""
        self._skipping = False  # inside a line already dropped as too long
        self.skipped_lines = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self._skipping:
            newline = text.find("\n")
            if newline < 0:
                return []
            self._skipping = False
            text = text[newline + 1 :]
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if len(self._partial) > self.max_line_bytes:
            self._partial = ""
            self._skipping = True
            self.skipped_lines += 1
        return [event for line in lines if (event := self._parse(line)) is not None]

    def finish(self) -> list[dict[str, Any]]:
        rest, self._partial, self._skipping = self._partial, "", False
        event = self._parse(rest)
        return [event] if event is not None else []

    def _parse(self, line: str) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.skipped_lines += 1
            return None
        return event if isinstance(event, dict) else None


def assistant_text(event: dict[str, Any]) -> str:
    """The text blocks of an ``assistant`` event, joined; '' for other events."""
    if event.get("type") != "assistant":
        return ""
    message = event.get("message") or {}
    blocks = message.get("content") or [] if isinstance(message, dict) else []
    return "".join(
        str(block.get("text", ""))
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "text"
    )


def tool_calls(event: dict[str, Any]) -> list[str]:
    """The names of the tools an ``assistant`` event calls."""
    if event.get("type") != "assistant":
        return []
    message = event.get("message") or {}
    blocks = message.get("content") or [] if isinstance(message, dict) else []
    return [
        str(block.get("name"))
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]


def result_summary(result: dict[str, Any]) -> str:
    """One line from a ``result`` event or an ``agent.result`` notification."""
    cost = result.get("cost_usd", result.get("total_cost_usd"))
    parts = [
        "error" if result.get("is_error") else "done",
        f"{result.get('num_turns', '?')} turns",
        f"{result.get('duration_ms', '?')} ms",
    ]
    if isinstance(cost, int | float):
        parts.append(f"${cost:.4f}")
    if result.get("session_id"):
        parts.append(f"session {result['session_id']}")
    return ", ".join(parts)
