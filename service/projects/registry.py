"""The project registry and its agents: :class:`Projects`.

It holds every project (loaded from the store at start, written through on
every change), enforces one agent at a time per project (two processes
resuming one Claude session would fork its transcript), starts agents
through the supervisor with an :class:`~service.projects.agent.AgentRun`
observer, and broadcasts to each project's subscribers: ``project.state``
itself, and everything of the project's executions by making the subscribers
sinks of them (so a slow subscriber only loses its own output chunks, in its
own bounded queue).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from service import protocol
from service.errors import (
    InternalError,
    InvalidParams,
    InvalidState,
    LimitReached,
    ProjectNotFound,
)
from service.params import ExecuteParams
from service.process.execution import Execution, ExecutionObserver
from service.process.sinks import Sink
from service.process.spawn import build_spec
from service.process.state import ExecutionState
from service.process.supervisor import Supervisor
from service.projects import storage
from service.projects.agent import AgentRun
from service.projects.approvals import Approvals
from service.projects.argv import AgentOptions, agent_argv
from service.projects.grants import PROMPT_TOOL
from service.projects.paths import (
    check_not_nested,
    recheck_project_path,
    resolve_project_path,
)
from service.projects.project import Project, ProjectState
from service.protocol import encode
from service.settings import Settings
from service.store import StoreError
from service.stream_json import AgentResult

logger = logging.getLogger(__name__)

#: A connection's queue takes non-droppable frames (responses) up to this many
#: times max_pending_bytes before it gives up on the client (service.outbox).
OUTBOX_HARD_FACTOR = 4
FRAME_MARGIN_BYTES = 64 * 1024
NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")


class Projects:
    def __init__(
        self, settings: Settings, supervisor: Supervisor, store: storage.Storage | None
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self._memory: storage.MemoryStore | None = None
        if store is None:
            store = self._memory = storage.MemoryStore()
        self.store: storage.Storage = store
        self.store.register_schema(storage.NAMESPACE, storage.MIGRATIONS)
        self.projects: dict[str, Project] = {}
        #: Events above this size are sent as a summary: the event and its own
        #: output chunk must both fit a client's queue (max_pending_bytes).
        self.max_event_frame_bytes = settings.max_pending_bytes // 4
        #: Tool permissions asked of clients (``approvals: "clients"``).
        self.approvals = Approvals(settings, self, supervisor)
        #: Told of each agent run's cost in USD (the metrics); set by the composition root.
        self.on_cost: Callable[[float], None] | None = None

    # --- life ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the registry (the store is open). Every project starts idle: an
        agent of a previous server did not survive it."""
        if self._memory is not None:
            await self._memory.open()
        for record in await self.store.read(storage.load_projects):
            project = Project.from_record(record)
            self.projects[project.id] = project
        if self._memory is None:
            await self._derive_last_status()
        logger.info("projects loaded", extra={"projects": len(self.projects)})

    async def refresh(self) -> None:
        """Take the store's projects as they are now (another node of the
        cluster may have created, changed or deleted some): load the new ones;
        an idle project takes its stored columns (another node's last run moved
        its session and counters); a project whose row is gone is dropped, its
        subscribers here told ``deleted``, as on the node that deleted it."""
        # This node's own changes still queued for the writer go first: else
        # the read could hand back a row older than what is in memory.
        await self.store.write(lambda conn: None)
        records = await self.store.read(storage.load_projects)
        for record in records:
            project = self.projects.get(record["id"])
            if project is None:
                self.projects[record["id"]] = Project.from_record(record)
            elif not project.busy:
                for name, value in record.items():
                    setattr(project, name, value)
        stored = {record["id"] for record in records}
        for project in [p for p in self.projects.values() if p.id not in stored]:
            if not project.busy:
                del self.projects[project.id]
                self._told_deleted(project)

    def _told_deleted(self, project: Project) -> None:
        self._notify(project, {**project.snapshot(), "state": "deleted"})
        project.subscribers.clear()

    async def _derive_last_status(self) -> None:
        """``last_status`` is the state of each project's newest execution: a
        server that died mid-run never wrote the run's end, and restart
        recovery has since marked that execution ``lost``."""
        last = await self.store.read(storage.last_run_states)
        for project_id, state in last.items():
            project = self.projects.get(project_id)
            if project is not None and project.last_status != state:
                logger.info(
                    "project last_status derived from its last run",
                    extra={"project_id": project_id, "was": project.last_status, "now": state},
                )
                project.last_status = state
                self._persist(project)

    async def stop(self) -> None:
        """Wait until every history entry and counter reached the store (called
        after the supervisor ended every execution, before the store closes)."""
        try:
            await self.store.write(lambda conn: None)
        except StoreError as exc:
            logger.error("projects: final store flush failed: %s", exc)
        if self._memory is not None:
            await self._memory.close()

    # --- registry --------------------------------------------------------------------

    def get(self, project_id: str) -> Project:
        project = self.projects.get(project_id)
        if project is None:
            raise ProjectNotFound(f"project not found: {project_id}", {"project_id": project_id})
        return project

    def all(self) -> list[Project]:
        return sorted(self.projects.values(), key=lambda p: p.name)

    async def create(self, name: str, path: str) -> Project:
        """Register ``path`` as project ``name``; InvalidParams naming the rule broken."""
        if not NAME_RE.match(name) or name != name.strip():
            raise InvalidParams(
                "project name must be 1 to 100 characters, without control characters "
                "or surrounding spaces",
                {"rule": "name"},
            )
        if len(self.projects) >= self.settings.max_projects:
            raise LimitReached(
                f"too many projects (max {self.settings.max_projects}); delete one first",
                {"error": "LIMIT_REACHED", "max_projects": self.settings.max_projects},
            )
        if any(p.name == name for p in self.projects.values()):
            raise InvalidParams(f"a project named {name!r} already exists", {"rule": "name_unique"})
        real = resolve_project_path(path, self.settings.project_roots)
        check_not_nested(real, ((p.name, p.path) for p in self.projects.values()))
        project = Project(id=uuid.uuid4().hex, name=name, path=real, created_at=time.time())
        self.projects[project.id] = project  # reserve name and path across the await
        try:
            await self.store.write(storage.insert_project(project.record(), self.store.notify))
        except BaseException:
            self.projects.pop(project.id, None)
            raise
        logger.info("project created", extra={"project_id": project.id, "path": real})
        return project

    async def delete(self, project_id: str) -> None:
        project = self.get(project_id)
        if project.busy:
            raise InvalidState(
                f"project {project.name!r} has a running agent; kill it first",
                {"project_id": project_id, "state": project.state.value},
            )
        del self.projects[project_id]  # no agent may start on it across the await
        try:
            await self.store.write(storage.delete_project(project_id, self.store.notify))
        except BaseException:
            self.projects[project_id] = project
            raise
        self._told_deleted(project)
        logger.info("project deleted", extra={"project_id": project_id})

    # --- subscribers -----------------------------------------------------------------

    def subscribe(self, project_id: str, sink: Sink) -> Project:
        project = self.get(project_id)
        project.subscribers.add(sink)
        if project.execution is not None:
            project.execution.sinks.add(sink)
        return project

    def unsubscribe(self, project_id: str, sink: Sink) -> Project:
        project = self.get(project_id)
        project.subscribers.discard(sink)
        execution = project.execution
        if execution is not None and sink not in self.supervisor.owners.get(execution.id, ()):
            execution.sinks.remove(sink)
        return project

    def follows(self, sink: Sink) -> bool:
        """Whether ``sink`` is subscribed to any project (it is not idle)."""
        return any(sink in project.subscribers for project in self.projects.values())

    def forget_connection(self, sink: Sink) -> None:
        for project in self.projects.values():
            project.subscribers.discard(sink)

    def _notify(self, project: Project, params: dict[str, Any]) -> None:
        frame = protocol.frame("project.state", params)
        for sink in list(project.subscribers):
            sink.offer(frame, droppable=False)

    # --- agents ----------------------------------------------------------------------

    async def run_agent(
        self,
        owner: Sink,
        project_id: str,
        options: AgentOptions,
        *,
        resume: bool = True,
        timeout_s: float | None = None,
        env: dict[str, str] | None = None,
        approvals: str | None = None,
    ) -> Execution:
        """Start the Claude CLI in the project; -32005 while one already runs.

        ``approvals`` (default: the setting ``agent_approvals``) ``"clients"``
        mints a per-run credential and points the CLI's permission prompt tool
        at our ``/mcp`` (:mod:`service.projects.approvals`)."""
        project = self.get(project_id)
        if project.busy:
            running = project.execution.id if project.execution is not None else None
            raise InvalidState(
                f"an agent is already running in project {project.name!r}",
                {"project_id": project.id, "execution_id": running},
            )
        settings = self.settings
        # Resolved again now: the directory may have become a symlink out of the roots.
        cwd = recheck_project_path(project.path, settings.project_roots)
        session_id = project.session_id if resume else None
        approvals = approvals or settings.agent_approvals
        grant = self.approvals.mint(project.id) if approvals == "clients" else None
        if grant is not None:
            options = replace(
                options, permission_prompt_tool=PROMPT_TOOL, mcp_config=grant.config_path
            )
        argv = agent_argv(settings.claude_bin, settings.claude_extra_args, options, session_id)
        # The agent is a command like any other: the one spawn policy (the
        # environment, LD_* under an allow-list, the timeout ceiling, the
        # allow-list itself, which binds claude_bin) decides whether it runs.
        request = ExecuteParams(argv=argv, cwd=cwd, env=env, timeout=timeout_s)
        spec = replace(
            build_spec(request, settings),
            project_id=project.id,
            labels={"kind": "agent"},
            max_line_bytes=settings.max_agent_line_bytes,
        )
        prompt = {
            "prompt": options.prompt,
            "model": options.model,
            "max_turns": options.max_turns,
            "resume": session_id,
            "approvals": approvals,
        }
        observers: list[ExecutionObserver] = [AgentRun(self, project, prompt)]
        if grant is not None:
            # First: pending requests are denied before the run's agent.result.
            observers.insert(0, self.approvals.observer(grant))
        project.starting = True
        try:
            return await self.supervisor.start(spec, owner, observers=observers)
        except OSError as exc:
            raise InternalError(
                f"cannot run the Claude CLI {settings.claude_bin!r}: {exc.strerror or exc}",
                {"claude_bin": settings.claude_bin},
            ) from None
        finally:
            project.starting = False
            if grant is not None and grant.execution_id is None:
                self.approvals.discard(grant)  # the run never started

    async def kill(self, project_id: str) -> Execution:
        project = self.get(project_id)
        execution = project.execution
        if execution is None:
            raise InvalidState(f"no agent is running in project {project.name!r}")
        await execution.cancel("agent.kill")
        return execution

    def new_session(self, project_id: str) -> Project:
        project = self.get(project_id)
        if project.busy:
            raise InvalidState(
                f"project {project.name!r} has a running agent; its session is in use"
            )
        project.session_id = None
        self._persist(project)
        self._notify(project, project.snapshot())
        return project

    async def messages(
        self, project_id: str, since: float | None, limit: int, cursor: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of history, oldest first, and the cursor of the next page."""
        self.get(project_id)
        await self.store.write(lambda conn: None)  # everything recorded so far is readable
        pending = self.settings.max_pending_bytes
        read = storage.read_messages(
            project_id,
            cursor,
            since,
            limit,
            # A response must fit the client's queue (see service.outbox).
            page_bytes=pending // 2,
            message_bytes=pending * OUTBOX_HARD_FACTOR - FRAME_MARGIN_BYTES,
        )
        rows, more = await self.store.read(read)
        return rows, (rows[-1]["id"] if more and rows else None)

    # --- called by AgentRun ----------------------------------------------------------

    def run_started(self, project: Project, execution: Execution, prompt: dict[str, Any]) -> None:
        project.execution = execution
        project.state = ProjectState.RUNNING
        project.runs += 1
        project.last_run_at = time.time()
        for sink in project.subscribers:
            execution.sinks.add(sink)
        self.record(project, "prompt", execution.id, encode(prompt))
        self._persist(project)
        self._notify(project, project.snapshot())

    def run_state(self, project: Project, state: ExecutionState) -> None:
        project.state = (
            ProjectState.PAUSED if state is ExecutionState.PAUSED else ProjectState.RUNNING
        )
        self._notify(project, project.snapshot())

    def run_ended(self, project: Project, execution: Execution, status: str) -> None:
        project.execution = None
        project.state = ProjectState.IDLE
        project.last_status = status
        self._persist(project)
        snapshot = project.snapshot()
        snapshot["last_execution_id"] = execution.id
        self._notify(project, snapshot)
        execution.log.info("agent run ended", extra={"project_id": project.id, "status": status})

    def set_session(self, project: Project, session_id: str) -> None:
        if project.session_id != session_id:
            project.session_id = session_id
            self._persist(project)

    def forget_session(self, project: Project, session_id: str) -> None:
        if project.session_id == session_id:
            project.session_id = None
            self._persist(project)

    def count_result(self, project: Project, result: AgentResult) -> None:
        project.turns += result.num_turns
        project.cost_usd += result.cost_usd
        if self.on_cost is not None:
            self.on_cost(result.cost_usd)
        self._persist(project)

    def record(self, project: Project, kind: str, execution_id: str | None, data: str) -> None:
        """Append to the project's history without waiting for the disk."""
        self._submit(storage.append_message(project.id, time.time(), kind, execution_id, data))

    def _persist(self, project: Project) -> None:
        self._submit(storage.update_project(project.id, project.record()))

    def _submit(self, job: storage.Job) -> None:
        try:
            self.store.submit(job)
        except StoreError as exc:
            logger.error("projects: cannot write to the store: %s", exc)
