"""The execution state machine.

``starting -> running <-> paused -> completed | failed | cancelled | timed_out``,
plus ``lost`` for executions a crashed server left behind (set by the store's
restart recovery). An illegal transition raises :class:`~service.errors.InvalidState`,
which the wire sees as -32005.
"""

from __future__ import annotations

from enum import StrEnum

from service.errors import InvalidState


class ExecutionState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_live(self) -> bool:
        return not self.is_final


FINAL_STATES = frozenset(
    {
        ExecutionState.COMPLETED,
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
        ExecutionState.TIMED_OUT,
        ExecutionState.LOST,
    }
)

_ENDINGS = FINAL_STATES - {ExecutionState.LOST}

TRANSITIONS: dict[ExecutionState, frozenset[ExecutionState]] = {
    ExecutionState.STARTING: frozenset({ExecutionState.RUNNING, ExecutionState.FAILED}),
    ExecutionState.RUNNING: frozenset({ExecutionState.PAUSED, *_ENDINGS}),
    ExecutionState.PAUSED: frozenset({ExecutionState.RUNNING, *_ENDINGS}),
}


def check_transition(current: ExecutionState, target: ExecutionState) -> None:
    """Raise InvalidState unless ``current -> target`` is allowed."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidState(
            f"execution is {current.value}; cannot become {target.value}",
            {"state": current.value},
        )
