"""``stats.subscribe`` and ``stats.unsubscribe``: periodic ``server.stats``
(:mod:`service.stats`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.dispatch import CallContext, Router
from service.errors import InvalidState
from service.params import StrictParams
from service.stats import DEFAULT_INTERVAL_S, MIN_INTERVAL_S, Subscriber

router = Router()

#: A day: longer intervals are a client bug, not a monitoring choice.
MAX_INTERVAL_S = 86400.0


class StatsSubscribeParams(StrictParams):
    interval_s: float = Field(
        DEFAULT_INTERVAL_S,
        ge=MIN_INTERVAL_S,
        le=MAX_INTERVAL_S,
        allow_inf_nan=False,
        strict=True,  # a number, not a string that looks like one
        description="Seconds between server.stats notifications.",
    )


class StatsUnsubscribeParams(StrictParams):
    pass


@router.method("stats.subscribe", StatsSubscribeParams)
async def subscribe(ctx: CallContext, params: StatsSubscribeParams) -> dict[str, Any]:
    """Subscribe this connection (again: the new interval replaces the old)."""
    connection = ctx.connection
    if not isinstance(connection, Subscriber):
        # The in-process peer of the MCP tools has no socket to stream to.
        raise InvalidState("stats.subscribe needs a WebSocket connection")
    connection.services.stats.subscribe(connection, params.interval_s)
    return {"subscribed": True, "interval_s": params.interval_s}


@router.method("stats.unsubscribe", StatsUnsubscribeParams)
async def unsubscribe(ctx: CallContext, params: StatsUnsubscribeParams) -> dict[str, Any]:
    return {
        "subscribed": False,
        "was_subscribed": ctx.connection.services.stats.unsubscribe(ctx.connection),
    }
