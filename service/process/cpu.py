"""One CPU cgroup for every child of a server, so that busy children cannot
starve it (issue 13, "children must not starve the control plane").

Every execution starts a new session, and with autogroup scheduling
(``kernel.sched_autogroup_enabled=1``) each session is a scheduling entity as
heavy as the whole server: 200 busy trees leave the server a 201st of the
CPU, whatever their nice. Tasks in a cpu cgroup other than the root do not
use autogroups, so every child of the server in *one* cpu cgroup of low
weight is one small entity against the server, however many trees there are.
When the server waits, the children still get every idle CPU: a weight only
matters under contention.

Where, in order (:func:`open_group`):

* **cgroup v2**, when the containment is the cgroup backend and the ``cpu``
  controller is available to its subtree ``ROOT/cc-executor-<id>/``: the
  controller is enabled in ``ROOT``'s ``cgroup.subtree_control`` and the
  subtree gets ``cpu.weight``. The execution leaves are inside it and the
  server is not, so there is nothing for a child to join, and the leaves stay
  one entity (``cpu`` is not enabled below the subtree).
* **cgroup v1**, when a ``cpu`` hierarchy is mounted and writable: the group
  ``<mount><the server's own cpu cgroup>/cc-executor-<id>/`` (the same
  ``<id>`` as the v2 subtree, so parallel servers never share one) with
  ``cpu.shares = weight * 1024 / 100`` (systemd's mapping). Each child joins
  it before it execs the client's program, by writing ``0`` to its ``tasks``
  file (:attr:`CpuGroup.tasks_file`, the shim's CPU argument): for a
  single-threaded process that moves the whole process, and unlike
  ``cgroup.procs`` it does not take the kernel's global threadgroup lock for
  writing (an RCU grace period, 10 to 20 ms, after a quiet spell).
* Else nothing: ``child_nice`` is the fallback.

A group left by an earlier process of the same server (same data directory)
is reused: the containment's recovery ends whatever ran in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.process.containment import subtree_name
from service.settings import Settings

logger = logging.getLogger(__name__)

CpuController = Literal["cgroup2", "cgroup1"]
#: cgroup v1's ``cpu.shares`` bounds (the kernel's).
SHARES_MIN, SHARES_MAX = 2, 262144
#: How long :meth:`CpuGroup.close` waits for the last members to leave a v1 group.
CLOSE_WAIT_S = 2.0


class CpuGroupError(OSError):
    """The group cannot be set up here; the message says why, in one line."""


def shares_of(weight: int) -> int:
    """``cpu.shares`` for a v2 ``cpu.weight`` (100 -> 1024, systemd's mapping)."""
    return max(SHARES_MIN, min(SHARES_MAX, weight * 1024 // 100))


@dataclass
class CpuGroup:
    """The cpu cgroup every child of the server runs in."""

    controller: CpuController
    path: str
    weight: int
    #: The file a child writes ``0`` to before it execs the client's program;
    #: None where the execution leaves are inside the group already (v2).
    tasks_file: str | None

    def public(self) -> dict[str, Any]:
        """What ``/health`` shows of it."""
        shown: dict[str, Any] = {
            "controller": self.controller,
            "group": self.path,
            "weight": self.weight,
        }
        if self.controller == "cgroup1":
            shown["shares"] = shares_of(self.weight)
        return shown

    async def close(self) -> None:
        """Remove a v1 group once its last member left (the v2 one is the
        containment's subtree, which the containment removes)."""
        if self.controller != "cgroup1":
            return
        deadline = time.monotonic() + CLOSE_WAIT_S
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    logger.warning(
                        "cannot remove the children's cpu cgroup",
                        extra={"cgroup": self.path, "error": str(exc)},
                    )
                    return
            await asyncio.sleep(0.05)


def _write(path: str, value: str) -> None:
    """Write to an existing (cgroup) file; never creates one."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


def v2_group(subtree: Path, weight: int) -> CpuGroup:
    """``subtree`` (the containment's, existing) as the children's cpu group;
    :class:`CpuGroupError` when the ``cpu`` controller is not available to it."""
    parent = subtree.parent
    try:
        if "cpu" not in _read(f"{parent}/cgroup.controllers").split():
            raise CpuGroupError(f"{parent}: no cpu controller (cgroup.controllers)")
        if "cpu" not in _read(f"{parent}/cgroup.subtree_control").split():
            _write(f"{parent}/cgroup.subtree_control", "+cpu")
        _write(f"{subtree}/cpu.weight", str(weight))
    except CpuGroupError:
        raise
    except OSError as exc:
        raise CpuGroupError(f"{parent}: cannot use the cpu controller: {exc}") from exc
    return CpuGroup("cgroup2", str(subtree), weight, None)


def v1_cpu_dir(mounts_file: str = "/proc/self/mounts", own: str = "/proc/self/cgroup") -> str:
    """The directory of this process's own cgroup in the v1 ``cpu`` hierarchy;
    :class:`CpuGroupError` when none is mounted."""
    mount = None
    with contextlib.suppress(OSError), open(mounts_file, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 3 and fields[2] == "cgroup" and "cpu" in fields[3].split(","):
                mount = fields[1].replace("\\040", " ")
                break
    if mount is None:
        raise CpuGroupError("no cgroup v1 cpu hierarchy is mounted")
    relative = "/"
    with contextlib.suppress(OSError), open(own, encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "cpu" in controllers.split(","):
                relative = path
                break
    return os.path.normpath(mount + "/" + relative.lstrip("/"))


def v1_group(parent: str, name: str, weight: int) -> CpuGroup:
    """The group ``parent/name`` (created, or reused when an earlier process of
    this server left it) with the shares of ``weight``."""
    path = os.path.join(parent, name)
    created = False
    try:
        try:
            os.mkdir(path)
            created = True
        except FileExistsError:
            pass
        _write(f"{path}/cpu.shares", str(shares_of(weight)))
        if not os.access(f"{path}/tasks", os.W_OK):
            raise OSError(f"{path}/tasks: not writable")
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise CpuGroupError(f"{path}: cannot use the cgroup v1 cpu controller: {exc}") from exc
    return CpuGroup("cgroup1", path, weight, f"{path}/tasks")


def open_group(settings: Settings, subtree: Path | None) -> CpuGroup | None:
    """The children's cpu group for ``settings.child_cpu_weight`` (0: None),
    where one can be had (see the module docstring); ``subtree`` is the cgroup
    v2 containment's subtree, None on the process-group backend."""
    weight = settings.child_cpu_weight
    if weight == 0:
        return None
    reasons = []
    if subtree is not None:
        try:
            return v2_group(subtree, weight)
        except CpuGroupError as exc:
            reasons.append(str(exc))
    try:
        return v1_group(v1_cpu_dir(), subtree_name(settings.data_dir), weight)
    except CpuGroupError as exc:
        reasons.append(str(exc))
    logger.info(
        "no cpu cgroup for the children; child_nice is the fallback",
        extra={"reasons": reasons},
    )
    return None
