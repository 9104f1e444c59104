"""``agent.decide`` and ``agent.permissions``: clients answering an agent's
tool permission requests (:mod:`service.projects.approvals`)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field

from service.dispatch import CallContext, Router
from service.server.methods.projects import Params, ProjectParams, log_fields, projects_of

logger = logging.getLogger(__name__)
router = Router()


class DecideParams(Params):
    request_id: str = Field(min_length=1, max_length=64)
    behavior: Literal["allow", "deny"]
    updated_input: dict[str, Any] | None = Field(
        None, description="allow only: the input the tool runs with (default: as asked)."
    )
    message: str | None = Field(
        None, max_length=4096, description="deny only: why, shown to the agent."
    )


@router.method("agent.decide", DecideParams)
async def agent_decide(ctx: CallContext, params: DecideParams) -> dict[str, Any]:
    approvals = projects_of(ctx).approvals
    request = approvals.decide(
        params.request_id,
        ctx.connection,
        ctx.connection.id,
        params.behavior,
        params.updated_input,
        params.message,
    )
    logger.info(
        "agent.decide %s",
        params.behavior,
        extra=log_fields(
            ctx,
            project_id=request.project_id,
            execution_id=request.execution.id,
            permission_request_id=request.id,
            decision=params.behavior,
        ),
    )
    return {"request_id": request.id, "behavior": params.behavior}


@router.method("agent.permissions", ProjectParams)
async def agent_permissions(ctx: CallContext, params: ProjectParams) -> dict[str, Any]:
    return {"requests": projects_of(ctx).approvals.pending_for(params.project_id)}
