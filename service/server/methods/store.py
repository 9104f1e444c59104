"""``attach``, ``transcript.get`` and ``executions.list``: the durable store on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.dispatch import CallContext, Router
from service.errors import InvalidParams, InvalidState, NotFound
from service.params import AttachParams, Count, ExecutionId, StrictParams, parse_cursor
from service.process.state import ExecutionState
from service.store import history
from service.store.lifecycle import Core

router = Router()

MAX_TRANSCRIPT_PAGE = 10000
MAX_LIST_PAGE = 500


class TranscriptParams(StrictParams):
    execution_id: ExecutionId
    since_seq: Count = Field(0, description="Chunks with a greater seq are returned.")
    limit: int = Field(1000, ge=1, le=MAX_TRANSCRIPT_PAGE, description="Chunks per page.")
    max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Data per page; a page holds at least one chunk, however large.",
    )


class ListParams(StrictParams):
    state: ExecutionState | list[ExecutionState] | None = None
    project_id: str | None = None
    node: str | None = Field(None, max_length=200, description="Only what this node ran.")
    limit: int = Field(50, ge=1, le=MAX_LIST_PAGE)
    cursor: str | None = Field(None, max_length=32, description="next_cursor of the last page.")


def _with_store(ctx: CallContext) -> Core:
    parts = ctx.connection.services.core
    if parts.store is None or parts.recorder is None:
        raise InvalidState("the store is disabled on this server (CC_EXECUTOR_STORE_ENABLED)")
    return parts


@router.method("attach", AttachParams)
async def attach(ctx: CallContext, params: AttachParams) -> dict[str, Any]:
    services = ctx.connection.services
    if services.cluster is not None:
        # Live on another node: replay and follow it from the shared store.
        remote = await services.cluster.remote.attach(
            ctx.connection, params.execution_id, params.since_seq
        )
        if remote is not None:
            return remote
    return await services.core.attacher.attach(
        ctx.connection, params.execution_id, params.since_seq
    )


@router.method("transcript.get", TranscriptParams)
async def transcript_get(ctx: CallContext, params: TranscriptParams) -> dict[str, Any]:
    parts = _with_store(ctx)
    store, recorder = parts.store, parts.recorder
    assert store is not None and recorder is not None
    execution_id = params.execution_id
    supervisor = ctx.connection.services.supervisor
    if execution_id in supervisor.live or execution_id in supervisor.finished:
        await recorder.sync()  # read what this server has seen so far, committed

    def read(conn: Any) -> tuple[dict[str, Any] | None, list[Any], bool]:
        record = history.get_execution(conn, execution_id)
        if record is None:
            return None, [], False
        rows, more = history.transcript_page(
            conn, execution_id, params.since_seq, params.limit, params.max_bytes
        )
        return record, rows, more

    record, rows, more = await store.read(read)
    if record is None:
        raise NotFound(f"execution not found: {execution_id}", {"execution_id": execution_id})
    chunks = [history.chunk_dict(row) for row in rows]
    return {
        "execution_id": execution_id,
        "state": record["state"],
        "last_seq": record["last_seq"],
        "stored_chunks": record["stored_chunks"],
        "unstored_chunks": record["unstored_chunks"],
        "unstored_bytes": record["unstored_bytes"],
        "transcript_capped": record["transcript_capped"],
        # Chunks the store could not take while its database was unreachable.
        "gap_chunks": record["gap_chunks"],
        "gaps": record["gaps"],
        "chunks": chunks,
        "next_since_seq": chunks[-1]["seq"] if chunks else params.since_seq,
        "more": more,
    }


@router.method("executions.list", ListParams)
async def executions_list(ctx: CallContext, params: ListParams) -> dict[str, Any]:
    parts = _with_store(ctx)
    store, recorder = parts.store, parts.recorder
    assert store is not None and recorder is not None
    before: int | None = None
    if params.cursor is not None:
        try:
            before = parse_cursor(params.cursor)
        except ValueError:
            raise InvalidParams("cursor: not a cursor returned by executions.list") from None
    if isinstance(params.state, list):
        states = [state.value for state in params.state] or None
    else:
        states = [params.state.value] if params.state is not None else None
    await recorder.sync()  # list what this server has seen so far
    rows, next_n = await store.read(
        lambda conn: history.list_executions(
            conn,
            states=states,
            project_id=params.project_id,
            limit=params.limit,
            before_n=before,
            node=params.node,
        )
    )
    live = ctx.connection.services.supervisor.live
    for row in rows:
        execution = live.get(row["execution_id"])
        if execution is not None:
            # The row's counters lag behind a live execution by one write batch.
            snapshot = execution.snapshot()
            for name in ("state", "stdout_bytes", "stderr_bytes", "last_seq", "duration_s"):
                row[name] = snapshot[name]
    return {"executions": rows, "next_cursor": str(next_n) if next_n is not None else None}
