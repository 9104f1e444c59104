"""Claude Code's ``--output-format stream-json``, parsed: pure functions and
one small line buffer, no I/O. The one parser of it, for both sides.

Each stdout line is one JSON object with a ``type``: ``system`` (subtype
``init`` carries the ``session_id``), ``assistant``, ``user``,
``stream_event`` and finally ``result``. Lines that are not JSON objects (a
crash's half line, a warning) are not events.

- The server (:mod:`service.projects.agent`) gets whole lines (its chunks are
  line-batched) and keeps each raw line: :func:`parse_lines`,
  :func:`session_of`, :class:`AgentResult`.
- People (``cc-executor agent``, the MCP ``agent`` tool) read text as it
  streams by, cut anywhere: :class:`EventLines`, :func:`assistant_text`,
  :func:`tool_calls`, :func:`result_summary`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson


def parse_event(line: str) -> dict[str, Any] | None:
    """The JSON object of one line; None for anything else."""
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        event = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def parse_lines(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each JSON object line of ``text`` (whole lines) as ``(raw_line, event)``."""
    for line in text.split("\n"):
        event = parse_event(line)
        if event is not None:
            yield line.strip(), event


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
        event = parse_event(line)
        if event is None:
            self.skipped_lines += 1
        return event


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


def session_of(event: dict[str, Any]) -> str | None:
    """The Claude session id an ``init`` or ``result`` event announces."""
    kind = event.get("type")
    if kind == "result" or (kind == "system" and event.get("subtype") == "init"):
        value = event.get("session_id")
        return value if isinstance(value, str) and value else None
    return None


def _number(value: Any, default: float = 0.0) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


@dataclass(frozen=True, slots=True)
class AgentResult:
    """The ``result`` event, as ``agent.result`` carries it."""

    session_id: str | None
    subtype: str
    is_error: bool
    cost_usd: float
    duration_ms: int
    num_turns: int
    result: str | None
    errors: list[str]

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> AgentResult:
        subtype = str(event.get("subtype") or "unknown")
        result = event.get("result")
        errors = event.get("errors")
        return cls(
            session_id=session_of(event),
            subtype=subtype,
            is_error=bool(event.get("is_error", subtype != "success")),
            cost_usd=_number(event.get("total_cost_usd", event.get("cost_usd"))),
            duration_ms=int(_number(event.get("duration_ms"))),
            num_turns=int(_number(event.get("num_turns"))),
            result=result if isinstance(result, str) else None,
            errors=[str(e) for e in errors] if isinstance(errors, list) else [],
        )

    def params(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "subtype": self.subtype,
            "is_error": self.is_error,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "num_turns": self.num_turns,
            "result": self.result,
            "errors": self.errors,
        }
