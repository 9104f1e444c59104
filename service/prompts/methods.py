"""Wire methods of the prompt records: ``prompts.record`` and ``prompts.records``.

``prompts.record {prompt, version, execution_id, marker, patterns, timeout_s?}``
asks the server to judge a finished execution from the transcript *its store*
recorded and to keep the verdict; the result is the stored record (with
``verdict`` and ``reasons``). A client cannot submit a verdict. An execution
still running is -32005; while a finished one's last chunks are still queued
for the store, the server waits (up to :data:`SETTLE_TIMEOUT_S`, then -32004).

``prompts.records {prompt?, after_id?, limit?}`` pages through the records,
oldest first (``after_id`` is the last id seen).

The client's patterns are compiled and run by :mod:`service.prompts.verdict`
(the ``regex`` package, in a store reader thread, GIL released, within a time
budget): an invalid pattern, or one that runs past the budget on the
transcript, is -32602 naming the pattern, and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from service.dispatch import CallContext, Router
from service.errors import InvalidParams, InvalidState, NotFound, TimedOut
from service.prompts import records, verdict

if TYPE_CHECKING:
    from service.store import Store

router = Router()

#: How long ``prompts.record`` waits for a finished execution's last chunks to
#: reach the store.
SETTLE_TIMEOUT_S = 30.0
SETTLE_POLL_S = 0.05


class RecordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    execution_id: str = Field(min_length=1, max_length=200)
    marker: str = Field(min_length=16, max_length=200)
    patterns: list[str] = Field(default_factory=list, max_length=100)
    timeout_s: float | None = Field(None, gt=0)


class RecordsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    after_id: int = Field(0, ge=0)
    limit: int = Field(1000, ge=1, le=10000)


#: The ``prompts`` namespace of the store (registered by the composition root).
SCHEMA = (records.NAMESPACE, records.MIGRATIONS)


def _store(ctx: CallContext) -> Store:
    store = ctx.connection.services.store
    if store is None or not store.is_open:
        raise InvalidState("prompt records need the store (store_enabled is false)")
    return store


@router.method("prompts.record", RecordParams)
async def record(ctx: CallContext, params: RecordParams) -> dict[str, Any]:
    store = _store(ctx)
    for pattern in params.patterns:
        try:
            verdict.compile_pattern(pattern)
        except verdict.PatternError as exc:
            raise InvalidParams(str(exc), {"pattern": pattern}) from None
    claim = records.RunClaim(
        params.prompt,
        params.version,
        params.execution_id,
        params.marker,
        tuple(params.patterns),
        params.timeout_s,
    )
    # An execution stays among the live ones for a moment after its final
    # transition (process.completed is out, its cgroup is being removed): only
    # one that has not reached a final state is refused.
    running = ctx.connection.services.supervisor.live.get(params.execution_id)
    if running is not None and not running.state.is_final:
        raise InvalidState(
            f"execution {params.execution_id} is still running: record it after process.completed",
            {"execution_id": params.execution_id},
        )
    recorder = ctx.connection.services.core.recorder
    if recorder is not None:
        await recorder.sync()  # a barrier: everything recorded so far is committed
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        try:
            finished = await store.read(lambda conn: records.read_finished(conn, claim))
            # The client's patterns run in a thread of their own, GIL released,
            # within a time budget: neither the loop nor the store's readers wait.
            judged = await asyncio.to_thread(records.judge, finished, claim)
            stored: dict[str, Any] = await store.write(
                functools.partial(records.insert, record=judged)
            )
            return stored
        except records.NotSettled as exc:
            if time.monotonic() > deadline:
                raise TimedOut(f"{exc} after {SETTLE_TIMEOUT_S:g} s") from None
            await asyncio.sleep(SETTLE_POLL_S)
        except verdict.PatternTimeout as exc:
            # Bounded (regex's timeout, off the loop): refused, never judged.
            raise InvalidParams(str(exc), {"pattern": exc.pattern}) from None
        except records.UnknownExecution as exc:
            raise NotFound(str(exc), {"execution_id": params.execution_id}) from None
        except records.Refused as exc:
            raise InvalidState(str(exc)) from None


@router.method("prompts.records", RecordsParams)
async def list_records(ctx: CallContext, params: RecordsParams) -> dict[str, Any]:
    store = _store(ctx)
    rows = await store.read(
        lambda conn: records.list_records(conn, params.prompt, params.after_id, params.limit)
    )
    return {"records": rows, "next_after_id": rows[-1]["id"] if rows else None}
