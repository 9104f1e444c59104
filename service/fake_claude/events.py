"""The events fake-claude prints, shaped like the real CLI's stream-json."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any


class Printer:
    """Writes events in the chosen output format; remembers them for ``json``."""

    def __init__(self, fmt: str, verbose: bool) -> None:
        self.fmt = fmt
        self.verbose = verbose
        self.messages: list[dict[str, Any]] = []

    def event(self, event: dict[str, Any]) -> None:
        self.messages.append(event)
        if self.fmt == "stream-json":
            write_line(json.dumps(event, ensure_ascii=False, separators=(",", ":")))

    def result(self, event: dict[str, Any]) -> None:
        self.messages.append(event)
        if self.fmt == "stream-json":
            write_line(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
        elif self.fmt == "json":
            payload: Any = self.messages if self.verbose else event
            write_line(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        else:
            write_line(
                str(event.get("result", "") if not event["is_error"] else event_error(event))
            )


def event_error(event: dict[str, Any]) -> str:
    errors = event.get("errors") or []
    return "Error: " + ("; ".join(errors) if errors else str(event.get("subtype")))


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
    }


def assistant(session_id: str, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(8),
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": str(uuid.uuid4()),
    }


def tool_result(
    session_id: str, tool_use_id: str, content: str, *, is_error: bool = False
) -> dict[str, Any]:
    return {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {
                    "tool_use_id": tool_use_id,
                    "type": "tool_result",
                    "content": content,
                    "is_error": is_error,
                }
            ],
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": str(uuid.uuid4()),
    }
