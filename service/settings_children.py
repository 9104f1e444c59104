"""Where children run and how much CPU they may take: a part of
:class:`service.settings.Settings`.

Kept in a module of their own so ``settings.py`` stays under its size limit;
:class:`Settings` inherits them, and ``docs/configuration.md`` lists them
under their own section (:mod:`service.settings_doc` reads the ``# ---``
comments of every class of the model). Pure: nothing is read at import time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

#: cgroup v2's ``cpu.weight`` bounds (the kernel's; 100 is a cgroup's default).
CPU_WEIGHT_MAX = 10000


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
    child_cpu_weight: int = Field(
        10,
        ge=0,
        le=CPU_WEIGHT_MAX,
        description=(
            "cpu.weight (cgroup v2 units, 1 to 10000; the server's own is 100) of one"
            " cgroup holding every child of this server, so that busy children cannot"
            " starve it: the cgroup v2 subtree where the cpu controller is available, else"
            " a cgroup v1 cpu group (cpu.shares = weight x 1024 / 100), else none"
            " (/health says which). 0: off."
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
