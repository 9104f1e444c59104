"""The JSON-RPC methods the service serves, one module per family."""

from __future__ import annotations

from service.dispatch import Router


def build_router() -> Router:
    from service.methods import core

    router = Router()
    router.include(core.router)
    from service.methods import store

    router.include(store.router)
    from service.prompts import methods as prompts

    router.include(prompts.router)
    from service.methods import projects

    router.include(projects.router)
    from service.methods import approvals

    router.include(approvals.router)
    from service.methods import stats

    router.include(stats.router)
    return router
