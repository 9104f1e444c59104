"""Choosing the containment backend at start (see :mod:`service.process.containment`)."""

from __future__ import annotations

from pathlib import Path

from service.process.cgroup import CgroupContainment
from service.process.containment import Containment, resolve_root, subtree_name
from service.process.pgroup import ProcessGroupContainment
from service.settings import Settings


def choose(settings: Settings) -> Containment:
    """The containment for these settings: a cgroup subtree of the server's own
    under the resolved root, else process groups. Raises
    :class:`~service.process.containment.ContainmentUnavailable` for a
    configured path that cannot be used."""
    root = resolve_root(settings.cgroup_root)
    if root is None:
        return ProcessGroupContainment(settings)
    return CgroupContainment(Path(root) / subtree_name(settings.data_dir), settings)
