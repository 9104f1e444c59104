"""One interface over the two ways of keeping an execution's process tree together.

Like runc's libcontainer cgroup manager: a :class:`Containment` (one per
server) hands out a :class:`Tree` per execution, and everything that signals,
pauses, waits for or kills an execution's processes goes through that tree.
Two backends implement it:

* ``cgroup`` (:mod:`service.process.cgroup`): a cgroup v2 leaf per execution
  under the server's own subtree ``ROOT/cc-executor-<id>/``. The kernel tracks
  membership: no process can leave, ``cgroup.freeze`` stops forks mid-pause,
  ``cgroup.kill`` ends the whole tree at once, and ``cgroup.events`` says
  (through inotify) when the tree is empty.
* ``process-group`` (:mod:`service.process.pgroup`): the execution's process
  group, plus the environment marker and the server as child subreaper for
  the processes that leave it (``setsid``, double fork).

:func:`service.process.backend.choose` picks one at start from
``settings.cgroup_root``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal, Protocol

ContainmentName = Literal["cgroup", "process-group"]
CGROUP2_FSTYPE = "cgroup2"


class ContainmentUnavailable(Exception):
    """The configured cgroup root cannot be used; the message is one line."""


class TreeGone(Exception):
    """The tree has no live process left (raised by :meth:`Tree.stop`)."""


class Killable(Protocol):
    """A set of processes the kill ladder can end (see :mod:`service.process.ladder`).

    All methods are safe to call after the set emptied, and any number of times.
    """

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to every live member; False when there is none."""

    def alive(self) -> bool:
        """Whether any process of the set is alive (not a zombie)."""

    async def wait_empty(self, timeout_s: float | None) -> bool:
        """Wait until no process of the set is alive; False on timeout."""

    def kill(self) -> None:
        """SIGKILL every member at once (the last rung of the ladder)."""


class Tree(Killable, Protocol):
    """Every process of one execution, however the backend finds them."""

    #: The ``cgroup.procs`` file the spawned child joins before it runs user
    #: code; None when the backend has no such file (process group).
    procs_file: str | None

    def attach(self, pid: int) -> None:
        """The leader was spawned with this pid (its group id too)."""

    async def stop(self, timeout_s: float) -> None:
        """PAUSE: stop every member with SIGSTOP and return once each one is
        stopped (state ``T``). Raises :class:`TreeGone` when no member is left
        and TimeoutError when they are not all stopped in ``timeout_s`` (the
        members are continued again then). Cancelling it continues them too."""

    def release(self) -> None:
        """The execution ended: free what the tree holds (remove the leaf)."""


class Containment(Protocol):
    """The server's containment manager: one per server, chosen at start."""

    name: ContainmentName

    def open(self, execution_id: str) -> Tree:
        """A new, empty tree for an execution about to be spawned."""

    async def start(self) -> None:
        """Kill and remove what an earlier process of this server left in its own
        subtree, and start watching; called once before any :meth:`open`."""

    async def close(self) -> None:
        """Stop watching and remove the server's subtree (every tree is released)."""


def subtree_name(data_dir: Path) -> str:
    """``cc-executor-<id>``: one data directory serves one server, so the id is
    derived from it and two servers on a host never share a subtree."""
    digest = hashlib.sha256(str(data_dir.expanduser().resolve()).encode()).hexdigest()
    return f"cc-executor-{digest[:12]}"


def cgroup2_mounts(mounts_file: str = "/proc/self/mounts") -> list[str]:
    """Mount points of cgroup2 file systems, ``/sys/fs/cgroup`` first."""
    found = []
    try:
        with open(mounts_file, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[2] == CGROUP2_FSTYPE:
                    found.append(fields[1].replace("\\040", " "))
    except OSError:
        return []
    return sorted(found, key=lambda mount: (mount != "/sys/fs/cgroup", mount))


def is_cgroup2_dir(path: str) -> bool:
    """Whether ``path`` is a directory of a cgroup2 hierarchy."""
    return os.path.isfile(os.path.join(path, "cgroup.procs")) and any(
        path == mount or path.startswith(mount.rstrip("/") + "/") for mount in cgroup2_mounts()
    )


def usable_root(path: str) -> bool:
    """Whether the server can create cgroups under ``path`` and move processes
    into them (checked by creating and removing a probe cgroup)."""
    if not is_cgroup2_dir(path) or not os.access(path, os.W_OK):
        return False
    probe = os.path.join(path, f"cc-executor-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        return all(
            os.access(os.path.join(probe, name), os.W_OK)
            for name in ("cgroup.procs", "cgroup.kill", "cgroup.freeze")
        )
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def resolve_root(setting: str) -> str | None:
    """The cgroup root to use for ``settings.cgroup_root``; None: process groups.

    ``auto``: the first usable cgroup2 mount, else None. ``off``: None. A path:
    that path, or :class:`ContainmentUnavailable` when it is not a writable
    cgroup2 directory.
    """
    if setting == "off":
        return None
    if setting == "auto":
        return next((mount for mount in cgroup2_mounts() if usable_root(mount)), None)
    path = os.path.normpath(setting)
    if not usable_root(path):
        raise ContainmentUnavailable(
            f"CC_EXECUTOR_CGROUP_ROOT={setting}: not a writable cgroup2 directory"
        )
    return path
