"""Claude Code's stream-json output, parsed (pure functions, no I/O).

Each stdout line of ``--output-format stream-json`` is one JSON object with a
``type``: ``system`` (subtype ``init`` carries the ``session_id``),
``assistant``, ``user``, ``stream_event`` and finally ``result``. Lines that
are not JSON objects (a crash's half line, a warning) are not events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson


def parse_lines(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each JSON object line of ``text`` as ``(raw_line, event)``."""
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped.startswith("{"):
            continue
        try:
            event = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield stripped, event


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
