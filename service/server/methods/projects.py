"""``project.*``, ``agent.*`` and ``messages.get``: projects and Claude Code agents."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.dispatch import CallContext, Router
from service.errors import InvalidParams
from service.params import ChildEnv, parse_cursor
from service.projects import Projects
from service.projects.argv import AgentOptions

logger = logging.getLogger(__name__)
router = Router()

#: Linux refuses a single argument of 128 KiB or more (MAX_ARG_STRLEN) with E2BIG.
MAX_ARG_BYTES = 128 * 1024 - 1

ProjectId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ToolName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^-\x00,][^\x00,]*$")
]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ProjectCreateParams(Params):
    name: str = Field(min_length=1, max_length=100)
    path: str = Field(min_length=1, max_length=4096)


class ProjectParams(Params):
    project_id: ProjectId


class AgentExecuteParams(Params):
    project_id: ProjectId
    prompt: str = Field(min_length=1, description="Sent as one argument, after --.")
    model: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/\[\]@-]*$")
    max_turns: int | None = Field(None, ge=1, le=10000)
    allowed_tools: list[ToolName] = Field(default_factory=list, max_length=200)
    disallowed_tools: list[ToolName] = Field(default_factory=list, max_length=200)
    permission_mode: Literal["default", "acceptEdits", "bypassPermissions", "plan"] | None = None
    append_system_prompt: str | None = None
    resume: bool = Field(True, description="Resume the project's session (false: a new one).")
    timeout: float | None = Field(None, gt=0, description="Wall-clock seconds.")
    env: ChildEnv | None = None
    approvals: Literal["none", "clients"] | None = Field(
        None,
        description="clients: tool permissions are asked of the run's clients "
        "(agent.permission); default: the setting agent_approvals.",
    )

    @field_validator("prompt", "append_system_prompt")
    @classmethod
    def _one_argument(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "\0" in value:
            raise ValueError("must not contain NUL characters")
        if len(value.encode()) > MAX_ARG_BYTES:
            raise ValueError(f"must be under {MAX_ARG_BYTES + 1} bytes (one command-line argument)")
        return value


class MessagesGetParams(Params):
    project_id: ProjectId
    since: float | None = Field(None, description="Only messages at or after this Unix time.")
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=32, description="next_cursor of the last page.")


def projects_of(ctx: CallContext) -> Projects:
    return ctx.connection.services.projects


async def known(ctx: CallContext) -> Projects:
    """The projects as the store has them now: projects are global, and
    another node may have created, changed or deleted some since this one
    last read them (a read of the store per call, on a cluster only)."""
    projects = projects_of(ctx)
    cluster = ctx.connection.services.cluster
    if cluster is not None and cluster.shared:
        await projects.refresh()
    return projects


@contextlib.asynccontextmanager
async def quiet_project(ctx: CallContext, project_id: str) -> AsyncIterator[Projects]:
    """Hold ``project_id`` as an agent run would (-32003 when unknown, -32005
    while an agent runs there on any node) for a change that must not meet
    one: delete, new session."""
    projects = await known(ctx)
    projects.get(project_id)
    cluster = ctx.connection.services.cluster
    if cluster is None:
        yield projects
        return
    await cluster.lock_project(project_id)
    try:
        yield projects
    finally:
        await cluster.unlock_project(project_id)


def log_fields(ctx: CallContext, **fields: Any) -> dict[str, Any]:
    return {"connection_id": ctx.connection.id, "request_id": ctx.request.id, **fields}


@router.method("project.create", ProjectCreateParams)
async def project_create(ctx: CallContext, params: ProjectCreateParams) -> dict[str, Any]:
    project = await (await known(ctx)).create(params.name, params.path)
    return project.snapshot()


@router.method("project.list", Params)
async def project_list(ctx: CallContext, params: Params) -> dict[str, Any]:
    return {"projects": [project.snapshot() for project in (await known(ctx)).all()]}


@router.method("project.get", ProjectParams)
async def project_get(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    return (await known(ctx)).get(params.project_id).snapshot()


@router.method("project.delete", ProjectParams)
async def project_delete(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    async with quiet_project(ctx, params.project_id) as projects:
        await projects.delete(params.project_id)
    return {"deleted": True, "project_id": params.project_id}


@router.method("project.subscribe", ProjectParams)
async def project_subscribe(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    project = (await known(ctx)).subscribe(params.project_id, ctx.connection)
    cluster = ctx.connection.services.cluster
    if cluster is not None and cluster.shared:
        cluster.relay.catch_up(params.project_id)  # a run already going on another node
    return {"subscribed": True, **project.snapshot()}


@router.method("project.unsubscribe", ProjectParams)
async def project_unsubscribe(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    project = projects_of(ctx).unsubscribe(params.project_id, ctx.connection)
    return {"subscribed": False, **project.snapshot()}


@router.method("agent.execute", AgentExecuteParams)
async def agent_execute(ctx: CallContext, params: AgentExecuteParams) -> dict[str, Any]:
    options = AgentOptions(
        prompt=params.prompt,
        model=params.model,
        max_turns=params.max_turns,
        allowed_tools=list(params.allowed_tools),
        disallowed_tools=list(params.disallowed_tools),
        permission_mode=params.permission_mode,
        append_system_prompt=params.append_system_prompt,
    )
    projects = await known(ctx)
    projects.get(params.project_id)  # -32003 before any lock is taken
    cluster = ctx.connection.services.cluster
    if cluster is not None:
        # One agent per project in the whole cluster: -32005 while one runs anywhere.
        await cluster.lock_project(params.project_id)
    try:
        if cluster is not None and cluster.shared:
            # The last run may have been another node's: its session and counters.
            await projects.refresh()
        execution = await projects.run_agent(
            ctx.connection,
            params.project_id,
            options,
            resume=params.resume,
            timeout_s=params.timeout,
            env=params.env,
            approvals=params.approvals,
        )
    except BaseException:
        if cluster is not None:
            await cluster.unlock_project(params.project_id)
        raise
    if cluster is not None:
        await cluster.bind_project(params.project_id, execution.id)
    logger.info(
        "agent started",
        extra=log_fields(
            ctx,
            project_id=params.project_id,
            execution_id=execution.id,
            pid=execution.pid,
            argv=execution.spec.argv[:-1],  # the prompt itself is in the history
        ),
    )
    resumed = next((a[9:] for a in execution.spec.argv if a.startswith("--resume=")), None)
    return {
        "status": "started",
        "execution_id": execution.id,
        "pid": execution.pid,
        "pgid": execution.pgid,
        "project_id": params.project_id,
        "resumed_session_id": resumed,
    }


@router.method("agent.kill", ProjectParams)
async def agent_kill(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    projects = await known(ctx)
    project = projects.get(params.project_id)
    cluster = ctx.connection.services.cluster
    if project.execution is None and cluster is not None:
        # The project's agent may run on another node: cancelled there.
        remote = await cluster.kill_remote_agent(params.project_id)
        if remote is not None:
            return {**remote, "project_id": params.project_id}
    execution = await projects.kill(params.project_id)
    logger.info(
        "agent killed",
        extra=log_fields(ctx, project_id=params.project_id, execution_id=execution.id),
    )
    return {"status": "cancelled", "execution_id": execution.id, "project_id": params.project_id}


@router.method("agent.new_session", ProjectParams)
async def agent_new_session(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    async with quiet_project(ctx, params.project_id) as projects:
        return projects.new_session(params.project_id).snapshot()


@router.method("messages.get", MessagesGetParams)
async def messages_get(ctx: CallContext, params: MessagesGetParams) -> dict[str, Any]:
    cursor = 0
    if params.cursor is not None:
        try:
            cursor = parse_cursor(params.cursor)
        except ValueError:
            raise InvalidParams(f"invalid cursor: {params.cursor!r}") from None
    messages, next_id = await (await known(ctx)).messages(
        params.project_id, params.since, params.limit, cursor
    )
    return {
        "project_id": params.project_id,
        "messages": messages,
        "next_cursor": str(next_id) if next_id is not None else None,
    }
