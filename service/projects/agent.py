"""Following one agent run: stream-json lines in, notifications and history out.

:class:`AgentRun` is an execution observer (see
:class:`~service.process.execution.ExecutionObserver`). For every stdout line that is a
JSON object it records the line in the project's history, saves a
``session_id`` that an ``init`` or ``result`` event announces, and sends
``agent.event`` to the execution's sinks (the client that started it and the
project's subscribers), numbered by ``index`` (1, 2, 3 ... per run). The
``result`` event also becomes ``agent.result``. At the final transition, which
the execution reports before it sends ``process.completed``, a run that
produced no ``result`` (a crash, a kill, a timeout) gets a synthesised
``agent.result`` with ``is_error: true``, and the project goes back to
``idle``. So for every run a client sees its ``agent.event``\\s, exactly one
``agent.result``, then ``process.completed``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from service.process.execution import Execution
from service.process.sinks import Chunk
from service.process.state import ExecutionState
from service.stream_json import AgentResult, parse_lines, session_of

if TYPE_CHECKING:
    from service.projects.project import Project

logger = logging.getLogger(__name__)

#: Bytes of the agent's stderr kept to explain a run that ended without a result.
STDERR_TAIL_BYTES = 4096
SESSION_NOT_FOUND = "No conversation found with session ID"


class Registry(Protocol):
    """What a run reports to the project registry
    (:class:`~service.projects.registry.Projects`)."""

    #: Events above this size are sent as a summary.
    max_event_frame_bytes: int

    def run_started(
        self, project: Project, execution: Execution, prompt: dict[str, Any]
    ) -> None: ...

    def run_state(self, project: Project, state: ExecutionState) -> None: ...

    def run_ended(self, project: Project, execution: Execution, status: str) -> None: ...

    def set_session(self, project: Project, session_id: str) -> None: ...

    def forget_session(self, project: Project, session_id: str) -> None: ...

    def count_result(self, project: Project, result: AgentResult) -> None: ...

    def record(self, project: Project, kind: str, execution_id: str | None, data: str) -> None: ...


class AgentRun:
    def __init__(self, registry: Registry, project: Project, prompt: dict[str, Any]) -> None:
        self.registry = registry
        self.project = project
        #: The ``prompt`` history entry, recorded once the execution id is known.
        self.prompt = prompt
        self.resumed: str | None = prompt.get("resume")
        self.result: AgentResult | None = None
        self.started = False
        self.events = 0
        self._stderr = ""

    # --- ExecutionObserver ------------------------------------------------------

    def on_output(self, execution: Execution, chunk: Chunk) -> None:
        if chunk.stream == "stderr":
            self._stderr = (self._stderr + chunk.data)[-STDERR_TAIL_BYTES:]
            return
        if chunk.truncated:
            execution.log.warning(
                "agent output line longer than max_agent_line_bytes; not parsed",
                extra={"seq": chunk.seq, "bytes": chunk.nbytes},
            )
            return
        for raw, event in parse_lines(chunk.data):
            self._on_event(execution, chunk.seq, raw, event)

    def on_transition(self, execution: Execution) -> None:
        state = execution.state
        if state is ExecutionState.RUNNING:
            if not self.started:
                self.started = True
                self.registry.run_started(self.project, execution, self.prompt)
            else:
                self.registry.run_state(self.project, state)
        elif state is ExecutionState.PAUSED:
            self.registry.run_state(self.project, state)
        elif state.is_final and self.started:
            if self.result is None:
                missing = self._missing_result(execution)
                self._send_result(execution, missing, self._status(execution))
            self.registry.run_ended(self.project, execution, self._status(execution))

    # --- events -----------------------------------------------------------------

    def _on_event(self, execution: Execution, seq: int, raw: str, event: dict[str, Any]) -> None:
        self.events += 1
        registry = self.registry
        project = self.project
        registry.record(project, "event", execution.id, raw)
        session_id = session_of(event)
        if session_id is not None:
            registry.set_session(project, session_id)
        params: dict[str, Any] = {"project_id": project.id, "seq": seq, "index": self.events}
        if len(raw) > registry.max_event_frame_bytes:
            # Too large to share a client's queue with its own output chunk: the
            # live notification carries a summary; the whole event is in
            # messages.get (and the raw line in the transcript).
            params["event"] = {
                key: event[key] for key in ("type", "subtype", "session_id", "uuid") if key in event
            }
            params["oversized"] = True
            params["bytes"] = len(raw)
        else:
            params["event"] = orjson.Fragment(raw)
        # Droppable like output chunks: a slow subscriber loses events only for
        # itself (counted in its ``dropped``; ``index`` shows the gap) and
        # catches up with messages.get. agent.result is never dropped.
        execution.broadcast("agent.event", params, droppable=True)
        if event.get("type") == "result":
            self.result = AgentResult.from_event(event)
            registry.count_result(project, self.result)
            self._send_result(execution, self.result, "failed" if self.result.is_error else None)

    def _send_result(self, execution: Execution, result: AgentResult, status: str | None) -> None:
        params = {"project_id": self.project.id, **result.params()}
        params["status"] = status or ("failed" if result.is_error else "completed")
        execution.broadcast("agent.result", params)
        self.registry.record(self.project, "result", execution.id, orjson.dumps(params).decode())

    def _missing_result(self, execution: Execution) -> AgentResult:
        state = execution.state
        if state is ExecutionState.CANCELLED:
            reason = "the agent was cancelled before its result"
        elif state is ExecutionState.TIMED_OUT:
            reason = "the agent timed out before its result"
        elif execution.signal is not None:
            reason = f"the agent was killed by signal {execution.signal} without a result"
        else:
            reason = f"the agent exited with code {execution.exit_code} without a result"
        errors = [reason]
        tail = self._stderr.strip().splitlines()[-3:]
        if tail:
            errors.append("stderr: " + " | ".join(tail))
        if SESSION_NOT_FOUND in self._stderr and self.resumed:
            self.registry.forget_session(self.project, self.resumed)
            errors.append("the Claude session was not found; the next run starts a new session")
        duration_ms = int(execution.duration_s * 1000)
        return AgentResult(
            session_id=self.project.session_id,
            subtype="error_no_result",
            is_error=True,
            cost_usd=0.0,
            duration_ms=duration_ms,
            num_turns=0,
            result=None,
            errors=errors,
        )

    def _status(self, execution: Execution) -> str:
        state = execution.state
        if state in (ExecutionState.CANCELLED, ExecutionState.TIMED_OUT):
            return state.value
        ok = self.result is not None and not self.result.is_error
        return "completed" if ok and state is ExecutionState.COMPLETED else "failed"
