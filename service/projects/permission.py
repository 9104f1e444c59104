"""One tool-permission request of an agent run: what it holds, how clients
see it (``agent.permission``, its input shortened when large), the decision
and the answer the permission prompt tool gives Claude Code. The requests'
life (ask, decide, time out, end with the run) is :mod:`service.projects.approvals`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from service.process.execution import Execution
from service.protocol import encode

Behavior = Literal["allow", "deny"]

#: An input value larger than this (encoded) is shown as a size in
#: ``agent.permission`` when the whole input would not fit a client's queue.
SHOWN_VALUE_BYTES = 1024


def shown_input(tool_input: dict[str, Any], limit_bytes: int) -> tuple[dict[str, Any], bool]:
    """The input as clients see it, and whether it was shortened: an input
    larger than ``limit_bytes`` has its large values replaced by their size
    (the full input is kept, and is what an allow without ``updated_input``
    runs with)."""
    if len(encode(tool_input)) <= limit_bytes:
        return tool_input, False
    shown: dict[str, Any] = {}
    for key, value in tool_input.items():
        size = len(encode(value))
        shown[key] = value if size <= SHOWN_VALUE_BYTES else f"[{size} bytes not shown]"
    return shown, True


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Decision:
    behavior: Behavior
    #: ``client``, ``timeout``, ``cancel`` or ``shutdown``.
    by: str
    connection_id: str | None = None
    message: str | None = None
    updated_input: dict[str, Any] | None = None
    decided_at: float = field(default_factory=time.time)


@dataclass(eq=False)
class PermissionRequest:
    id: str
    execution: Execution
    project_id: str
    tool_name: str
    input: dict[str, Any]
    tool_use_id: str | None
    created_at: float
    expires_at: float
    decision: Decision | None = None
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    #: Bytes above which the input is shown shortened (see :func:`shown_input`).
    shown_limit_bytes: int = 1 << 62

    def params(self) -> dict[str, Any]:
        """The ``agent.permission`` params (also what ``agent.permissions`` lists)."""
        shown, shortened = shown_input(self.input, self.shown_limit_bytes)
        params: dict[str, Any] = {
            "request_id": self.id,
            "execution_id": self.execution.id,
            "project_id": self.project_id,
            "tool_name": self.tool_name,
            "input": shown,
            "tool_use_id": self.tool_use_id,
            "expires_at": iso_utc(self.expires_at),
        }
        if shortened:
            params["input_truncated"] = True
        return params

    def tool_answer(self) -> dict[str, Any]:
        """The decision as the permission prompt tool returns it to Claude Code."""
        decision = self.decision
        assert decision is not None
        if decision.behavior == "allow":
            updated = decision.updated_input if decision.updated_input is not None else self.input
            return {"behavior": "allow", "updatedInput": updated}
        return {"behavior": "deny", "message": decision.message or "denied"}


@dataclass(frozen=True, slots=True)
class Settled:
    """What is kept of a decided request: enough to refuse a late decision
    (-32005) to those who may decide, without holding its input or execution."""

    execution_id: str
    project_id: str
    decision: Decision
