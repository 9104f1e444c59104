"""Where children run and at which priority: a part of
:class:`service.settings.Settings`.

Kept in a module of their own so ``settings.py`` stays under its size limit;
:class:`Settings` inherits them, and ``docs/configuration.md`` lists them
under their own section (:mod:`service.settings_doc` reads the ``# ---``
comments of every class of the model). Pure: nothing is read at import time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class ChildrenSettings(BaseSettings):
    """How the server contains its children and keeps them from starving it."""

    # --- children ----------------------------------------------------------
    cgroup_root: str = Field(
        "auto",
        description=(
            "Where execution cgroups go: auto (a writable cgroup2 mount, else process"
            " groups), off (process groups), or a writable cgroup2 directory."
        ),
    )
    child_nice: int = Field(
        0,
        ge=0,
        le=19,
        description=(
            "Niceness of every child and of its session's autogroup, so that busy"
            " children cannot starve the server (0: the server's own; see docs/performance.md)."
        ),
    )
