"""The JSON-RPC methods the service serves, one module per family."""

from __future__ import annotations

from service.dispatch import Router
from service.prompts import methods as prompts
from service.server.methods import approvals, core, projects, stats, store


def build_router() -> Router:
    """Every wire method, in one table (a name registered twice is a bug)."""
    router = Router()
    for family in (core, store, prompts, projects, approvals, stats):
        router.include(family.router)
    return router
