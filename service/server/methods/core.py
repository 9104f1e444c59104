"""``execute``, ``control``, ``input`` and ``status``: the executor core."""

from __future__ import annotations

import functools
import logging
import shlex
import time
from typing import Any

from service.dispatch import CallContext, Router
from service.errors import InvalidParams, InvalidState, NotFound, RpcError
from service.params import ControlParams, ExecuteParams, InputParams, StatusParams
from service.process.execution import Execution
from service.process.spawn import build_spec
from service.store import history

logger = logging.getLogger(__name__)
router = Router()


def audit(ctx: CallContext, decision: str, **fields: Any) -> None:
    """One log line per execute attempt or refusal, with who asked."""
    connection = ctx.connection
    logger.info(
        "execute %s",
        decision,
        extra={
            "connection_id": connection.id,
            "peer": connection.peer,
            "request_id": ctx.request.id,
            "decision": decision,
            **fields,
        },
    )


@router.method("execute", ExecuteParams)
async def execute(ctx: CallContext, params: ExecuteParams) -> dict[str, Any]:
    services = ctx.connection.services
    requested = params.argv if params.argv is not None else params.command
    cluster = services.cluster
    if params.node is not None and (cluster is None or params.node != cluster.node_id):
        if cluster is None:
            raise InvalidParams(f"unknown node {params.node!r}: this server has no store")
        forwarded = params.model_dump(exclude={"node"}, exclude_none=True)
        result = await cluster.remote.execute_on(params.node, ctx.connection, forwarded)
        audit(
            ctx, "forwarded", argv=requested, node=params.node, execution_id=result["execution_id"]
        )
        return result
    try:
        spec = build_spec(params, services.settings)
        execution = await services.supervisor.start(spec, ctx.connection)
    except RpcError as exc:
        audit(ctx, "refused", argv=requested, reason=exc.message, code=exc.code)
        raise
    except OSError as exc:
        shown = shlex.join(requested) if isinstance(requested, list) else requested
        reason = f"cannot execute {shown}: {exc.strerror or exc}"
        audit(ctx, "failed", argv=requested, reason=reason)
        raise InvalidParams(reason, {"errno": exc.errno}, name="EXEC_FAILED") from None
    audit(
        ctx,
        "started",
        argv=spec.argv,
        cwd=spec.cwd,
        execution_id=execution.id,
        pid=execution.pid,
        timeout_s=spec.timeout_s,
    )
    return {
        "status": "started",
        "execution_id": execution.id,
        "pid": execution.pid,
        "pgid": execution.pgid,
    }


def resolve_execution(ctx: CallContext, execution_id: str | None) -> Execution:
    """The named execution, or the connection's only live one when unnamed."""
    supervisor = ctx.connection.services.supervisor
    if execution_id is not None:
        return supervisor.get(execution_id)
    live = supervisor.live_owned_by(ctx.connection)
    if len(live) == 1:
        return live[0]
    if not live:
        raise NotFound("no live execution on this connection; give execution_id")
    raise InvalidParams(
        f"{len(live)} live executions on this connection; give execution_id",
        {"execution_ids": [e.id for e in live]},
    )


CONTROL_RESULTS = {"PAUSE": "paused", "RESUME": "resumed", "CANCEL": "cancelled"}


@router.method("control", ControlParams)
async def control(ctx: CallContext, params: ControlParams) -> dict[str, Any]:
    started_mono = time.monotonic()
    cluster = ctx.connection.services.cluster
    if params.execution_id is not None and cluster is not None:
        # An execution of another node: its node answers (and checks the effect).
        forwarded = await cluster.remote.forward(
            params.execution_id, "control", {"type": params.type}
        )
        if forwarded is not None:
            return forwarded
    execution = resolve_execution(ctx, params.execution_id)
    fields = {
        "connection_id": ctx.connection.id,
        "request_id": ctx.request.id,
        "execution_id": execution.id,
        "control": params.type,
    }
    try:
        if params.type == "PAUSE":
            await execution.pause()
        elif params.type == "RESUME":
            await execution.resume()
        else:
            await execution.cancel()
    except RpcError as exc:
        logger.info("control refused: %s", exc.message, extra={**fields, "code": exc.code})
        raise
    logger.info("control %s", params.type, extra=fields)
    ctx.connection.services.metrics.control_done(params.type, started_mono, execution)
    return {"status": CONTROL_RESULTS[params.type], "execution_id": execution.id}


@router.method("input", InputParams)
async def input_(ctx: CallContext, params: InputParams) -> dict[str, Any]:
    cluster = ctx.connection.services.cluster
    if cluster is not None:
        forwarded = await cluster.remote.forward(
            params.execution_id, "input", {"data": params.data, "eof": params.eof}
        )
        if forwarded is not None:
            return forwarded
    execution = ctx.connection.services.supervisor.get(params.execution_id)
    if execution.state.is_final:
        raise InvalidState(f"execution is {execution.state.value}")
    return {"written": execution.write_input(params.data, params.eof)}


@router.method("status", StatusParams)
async def status(ctx: CallContext, params: StatusParams) -> dict[str, Any]:
    services = ctx.connection.services
    supervisor = services.supervisor
    if params.execution_id is not None:
        try:
            return supervisor.get(params.execution_id).snapshot()
        except NotFound:
            if services.store is None:
                raise
            # Gone from memory (an earlier server, or long finished): the store knows.
            stored = await services.store.read(
                functools.partial(history.get_execution, execution_id=params.execution_id)
            )
            if stored is None:
                raise
            return stored
    return {"executions": [e.snapshot() for e in supervisor.owned_by(ctx.connection)]}
