"""Tool permissions of agent runs, asked of the run's clients: :class:`Approvals`.

A run started with ``approvals: "clients"`` gets a per-run credential
(:mod:`service.projects.grants`) and the CLI is told to ask the MCP tool
``mcp__cc_executor__approve`` before any tool that needs permission. Each call
of that tool becomes a :class:`PermissionRequest`:

1. ``agent.permission`` ``{request_id, execution_id, project_id, tool_name,
   input, tool_use_id, expires_at}`` goes to every sink of the execution (its
   owners and the project's subscribers); the request is recorded in the
   project's history (kind ``permission``) and in the audit log.
2. The first ``agent.decide`` of an owner or subscriber wins. Otherwise the
   request is denied when ``permission_timeout_s`` passes (``by: timeout``),
   when the run ends (``cancel``), or when the server shuts down
   (``shutdown``). Any later decision gets -32005.
3. ``agent.permission_resolved`` ``{request_id, behavior, by,
   connection_id?}`` goes to the same sinks, the decision is recorded (kind
   ``permission_resolved``) and logged, and the tool call returns what Claude
   Code expects: ``{"behavior": "allow", "updatedInput": {...}}`` or
   ``{"behavior": "deny", "message": "..."}``.

Resolution happens in the final transition of the run, which the execution
reports before ``process.completed``: so no ``agent.permission_resolved``
ever follows a run's ``process.completed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

from service.errors import InternalError, InvalidState, LimitReached, NotAllowed, NotFound
from service.process.execution import Execution
from service.process.sinks import Chunk, Sink
from service.process.state import ExecutionState
from service.projects.grants import Grant, Grants
from service.projects.permission import (
    Behavior,
    Decision,
    PermissionRequest,
    Settled,
    iso_utc,
)
from service.protocol import encode

if TYPE_CHECKING:
    from service.process.supervisor import Supervisor
    from service.projects.project import Project
    from service.settings import Settings

logger = logging.getLogger(__name__)

#: Decided requests remembered, so that a late decision gets -32005, not -32003.
RESOLVED_KEPT = 1000
#: Requests one run may have pending at once (the CLI asks one at a time; this
#: bounds what a misbehaving child can make the server hold).
MAX_PENDING_PER_RUN = 16
#: How long a tool call may wait for its run to be bound (the child calls only
#: once it runs, which is bound synchronously; this is a safety margin).
BIND_WAIT_S = 5.0


class Registry(Protocol):
    """What approvals need of the project registry
    (:class:`~service.projects.registry.Projects`)."""

    projects: dict[str, Project]
    max_event_frame_bytes: int

    def get(self, project_id: str) -> Project: ...

    def record(self, project: Project, kind: str, execution_id: str | None, data: str) -> None: ...


class GrantObserver:
    """Binds a grant to its execution when the child runs; ends it with the run."""

    def __init__(self, approvals: Approvals, grant: Grant) -> None:
        self.approvals = approvals
        self.grant = grant

    def on_output(self, execution: Execution, chunk: Chunk) -> None:
        pass

    def on_transition(self, execution: Execution) -> None:
        if execution.state is ExecutionState.RUNNING and self.grant.execution_id is None:
            self.approvals.bind(self.grant, execution)
        elif execution.state.is_final:
            self.approvals.end_run(self.grant, execution)


class Approvals:
    def __init__(self, settings: Settings, registry: Registry, supervisor: Supervisor) -> None:
        self.settings = settings
        self.registry = registry
        self.supervisor = supervisor
        self.grants = Grants()
        #: Where the child reaches our ``/mcp`` (set by the server once it listens).
        self.mcp_url: str | None = None
        self.pending: dict[str, PermissionRequest] = {}
        self.resolved: OrderedDict[str, Settled] = OrderedDict()
        self._executions: dict[Grant, Execution] = {}
        self._bound: dict[Grant, asyncio.Event] = {}
        self._closing = False

    # --- runs --------------------------------------------------------------------

    def mint(self, project_id: str) -> Grant:
        """A credential and config file for a new run, or an RpcError saying why not."""
        if self._closing:
            raise LimitReached("the server is shutting down")
        if self.mcp_url is None:
            raise InternalError(
                "approvals need the server's own /mcp address, which is known only "
                "once it listens (cc-executor serve)"
            )
        try:
            grant = self.grants.mint(project_id, self.mcp_url)
        except OSError as exc:
            raise InternalError(f"cannot write the agent's MCP config: {exc}") from None
        self._bound[grant] = asyncio.Event()
        return grant

    def observer(self, grant: Grant) -> GrantObserver:
        return GrantObserver(self, grant)

    def bind(self, grant: Grant, execution: Execution) -> None:
        grant.execution_id = execution.id
        self._executions[grant] = execution
        event = self._bound.get(grant)
        if event is not None:
            event.set()

    def discard(self, grant: Grant) -> None:
        """A run that never started: revoke its grant."""
        self.grants.revoke(grant)
        self._bound.pop(grant, None)
        self._executions.pop(grant, None)

    def end_run(self, grant: Grant, execution: Execution) -> None:
        """The run ended: deny what it still waits for, revoke its credential."""
        by = "shutdown" if self._closing else "cancel"
        message = (
            "denied: the server is shutting down"
            if self._closing
            else f"denied: the run ended ({execution.state.value})"
        )
        for request in [r for r in self.pending.values() if r.execution is execution]:
            self._resolve(request, Decision("deny", by, message=message))
        self.discard(grant)

    def shutdown(self) -> None:
        """Deny every pending request (``by: shutdown``); refuse new runs."""
        self._closing = True
        for request in list(self.pending.values()):
            self._resolve(
                request, Decision("deny", "shutdown", message="denied: the server is shutting down")
            )

    # --- the tool side -------------------------------------------------------------

    async def ask(
        self, grant: Grant, tool_name: str, tool_input: dict[str, Any], tool_use_id: str | None
    ) -> PermissionRequest:
        """Ask the run's clients; returns the request once decided (never raises
        for a missing answer: the timeout denies). Cancelling it denies the
        request (``by: cancel``) and re-raises."""
        if grant.revoked:
            raise NotAllowed("this credential's run has ended")
        bound = self._bound.get(grant)
        if bound is not None and not bound.is_set():
            try:
                await asyncio.wait_for(bound.wait(), BIND_WAIT_S)
            except TimeoutError:
                raise InvalidState("the run of this credential has not started") from None
        execution = self._executions.get(grant)
        if execution is None or grant.revoked or not execution.state.is_live:
            raise NotAllowed("this credential's run has ended")
        waiting = sum(1 for r in self.pending.values() if r.execution is execution)
        if waiting >= MAX_PENDING_PER_RUN:
            raise LimitReached(
                f"this run already has {waiting} pending permission requests "
                f"(max {MAX_PENDING_PER_RUN})"
            )
        now = time.time()
        timeout_s = self.settings.permission_timeout_s
        request = PermissionRequest(
            id=uuid.uuid4().hex,
            execution=execution,
            project_id=grant.project_id,
            tool_name=tool_name,
            input=tool_input,
            tool_use_id=tool_use_id,
            created_at=now,
            expires_at=now + timeout_s,
            shown_limit_bytes=self.registry.max_event_frame_bytes,
        )
        self.pending[request.id] = request
        params = request.params()
        execution.broadcast("agent.permission", params)
        # The history keeps the whole input (messages.get pages by size).
        entry = {**params, "input": tool_input, "asked_at": iso_utc(now)}
        entry.pop("input_truncated", None)
        self._record(request, "permission", entry)
        execution.log.info(
            "permission requested",
            extra={
                "project_id": request.project_id,
                "request_id": request.id,
                "tool_name": tool_name,
                "tool_use_id": tool_use_id,
                "decision": "asked",
            },
        )
        try:
            await asyncio.wait_for(request.decided.wait(), timeout_s)
        except TimeoutError:
            message = f"denied: no decision within {timeout_s:g} s"
            self._resolve(request, Decision("deny", "timeout", message=message))
        except asyncio.CancelledError:
            message = "denied: the permission request was abandoned"
            self._resolve(request, Decision("deny", "cancel", message=message))
            raise
        return request

    # --- the client side -------------------------------------------------------------

    def decide(
        self,
        request_id: str,
        sink: Sink,
        connection_id: str,
        behavior: Behavior,
        updated_input: dict[str, Any] | None,
        message: str | None,
    ) -> PermissionRequest:
        """Record a client's decision; the first one wins, later ones -32005."""
        request = self.pending.get(request_id)
        settled = self.resolved.get(request_id)
        if request is not None:
            execution_id, project_id = request.execution.id, request.project_id
        elif settled is not None:
            execution_id, project_id = settled.execution_id, settled.project_id
        else:
            raise NotFound(
                f"permission request not found: {request_id}", {"request_id": request_id}
            )
        if not self._may_decide(execution_id, project_id, sink):
            raise NotAllowed(
                "only the run's owner or a subscriber of its project may decide",
                {"request_id": request_id, "project_id": project_id},
            )
        if request is None:  # a decided request leaves ``pending`` at once
            assert settled is not None
            earlier = settled.decision
            raise InvalidState(
                f"permission request {request_id} was already decided: {earlier.behavior} "
                f"by {earlier.by}",
                {"request_id": request_id, "behavior": earlier.behavior, "by": earlier.by},
            )
        decision = Decision(
            behavior,
            "client",
            connection_id=connection_id,
            message=message if behavior == "deny" else None,
            updated_input=updated_input if behavior == "allow" else None,
        )
        if behavior == "deny" and not message:
            decision = Decision("deny", "client", connection_id, "denied by a client")
        self._resolve(request, decision)
        return request

    def pending_for(self, project_id: str) -> list[dict[str, Any]]:
        self.registry.get(project_id)
        requests = [r for r in self.pending.values() if r.project_id == project_id]
        return [r.params() for r in sorted(requests, key=lambda r: r.created_at)]

    def _may_decide(self, execution_id: str, project_id: str, sink: Sink) -> bool:
        if sink in self.supervisor.owners.get(execution_id, ()):
            return True
        project = self.registry.projects.get(project_id)
        return project is not None and sink in project.subscribers

    # --- resolution --------------------------------------------------------------------

    def _resolve(self, request: PermissionRequest, decision: Decision) -> None:
        if request.decision is not None:
            return
        request.decision = decision
        request.decided.set()
        self.pending.pop(request.id, None)
        self.resolved[request.id] = Settled(request.execution.id, request.project_id, decision)
        while len(self.resolved) > RESOLVED_KEPT:
            self.resolved.popitem(last=False)
        params: dict[str, Any] = {
            "request_id": request.id,
            "project_id": request.project_id,
            "behavior": decision.behavior,
            "by": decision.by,
        }
        if decision.connection_id is not None:
            params["connection_id"] = decision.connection_id
        if decision.message is not None:
            params["message"] = decision.message
        request.execution.broadcast("agent.permission_resolved", params)
        record = {
            **params,
            "execution_id": request.execution.id,
            "tool_name": request.tool_name,
            "decided_at": iso_utc(decision.decided_at),
        }
        if decision.updated_input is not None:
            record["updated_input"] = decision.updated_input
        self._record(request, "permission_resolved", record)
        request.execution.log.info(
            "permission %s",
            "allowed" if decision.behavior == "allow" else "denied",
            extra={
                "project_id": request.project_id,
                "request_id": request.id,
                "tool_name": request.tool_name,
                "decision": decision.behavior,
                "by": decision.by,
                "decided_by": decision.connection_id,
                "wait_s": round(decision.decided_at - request.created_at, 3),
            },
        )

    def _record(self, request: PermissionRequest, kind: str, data: dict[str, Any]) -> None:
        project = self.registry.projects.get(request.project_id)
        if project is not None:
            self.registry.record(project, kind, request.execution.id, encode(data))
