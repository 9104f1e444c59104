"""One registered project: a directory where Claude Code agents run.

The persistent part (name, path, the Claude session id of its last run,
counters) lives in the store; the live part (state, the running agent's
execution, the subscribers) only in memory. The state follows the running
agent's execution: ``idle`` without one, ``running``, ``paused``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.process.execution import Execution
from service.process.sinks import Sink


class ProjectState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"


@dataclass(eq=False)
class Project:
    id: str
    name: str
    path: str
    created_at: float
    session_id: str | None = None
    runs: int = 0
    turns: int = 0
    cost_usd: float = 0.0
    last_run_at: float | None = None
    last_status: str | None = None
    state: ProjectState = ProjectState.IDLE
    #: The live agent execution, from spawn until its final transition.
    execution: Execution | None = None
    #: True while ``agent.execute`` is spawning: the slot is taken.
    starting: bool = False
    subscribers: set[Sink] = field(default_factory=set)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Project:
        return cls(**record)

    def record(self) -> dict[str, Any]:
        """The stored columns."""
        return {
            "id": self.id,
            "name": self.name,
            "path": self.path,
            "created_at": self.created_at,
            "session_id": self.session_id,
            "runs": self.runs,
            "turns": self.turns,
            "cost_usd": self.cost_usd,
            "last_run_at": self.last_run_at,
            "last_status": self.last_status,
        }

    @property
    def busy(self) -> bool:
        return self.starting or self.execution is not None

    def snapshot(self) -> dict[str, Any]:
        """The project as the wire shows it (``project.get``, ``project.state``)."""
        record = self.record()
        record["project_id"] = record.pop("id")
        record["cost_usd"] = round(self.cost_usd, 6)
        record["state"] = self.state.value
        record["execution_id"] = self.execution.id if self.execution is not None else None
        record["subscribers"] = len(self.subscribers)
        return record
