"""``python -m stress.bench.spawn``: what one spawn of ``true`` costs, way by way.

Spawns ``true`` and waits for it, ``--runs`` times, from a process holding a
heap the size of a running server (``--heap-mib``: a fork copies the page
tables of all of it; a vfork does not), under uvloop like the server. Ways:

- ``uvloop + preexec_fn``: the server before issue #13 (libuv forks; the
  ``preexec_fn`` set the parent-death signal).
- ``Popen vfork, no shim``: the lower bound, nothing done in the child.
- ``Launcher shim``: the server's way (:mod:`service.process.launcher`): posix_spawn on
  the vfork path from the event loop, the C shim arms the parent-death signal
  and execs the checked file with the client's argv[0].
- ``Launcher shim, leaf (the server)``: the server's way on the cgroup
  backend: each spawn close after the last is moved, the others born (below).
- ``Launcher shim, born in a leaf``: the same, and the program is created in a
  fresh leaf cgroup (mkdir before, rmdir after) by the shim's
  ``clone3(CLONE_INTO_CGROUP)``, as on the cgroup backend.
- ``Launcher shim, moved to a leaf``: the shim writes itself into the leaf's
  ``cgroup.procs`` instead (the way before): a migration, which waits for an
  RCU grace period when none happened in the last milliseconds.
- ``Launcher preexec + cgroup``: the fallback without a C compiler (fork path).

Prints milliseconds per spawn-and-wait, back to back and ``--idle-ms`` apart
(as requests arrive at a server that is not flooded). The machine is shared:
compare lines of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from service.process.containment import resolve_root
from service.process.launcher import Launcher, find_shim

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
TRUE = "/bin/true"


def _pdeathsig() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def uvloop_preexec() -> None:
    proc = await asyncio.create_subprocess_exec(
        TRUE,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_pdeathsig,
    )
    await proc.wait()


async def popen_vfork() -> None:
    popen = await asyncio.to_thread(
        subprocess.Popen,
        [TRUE],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    await asyncio.to_thread(popen.wait)
    assert popen.stdout is not None and popen.stderr is not None
    popen.stdout.close()
    popen.stderr.close()


def launcher_way(launcher: Launcher, cgroup: Path | None) -> Callable[[], Awaitable[None]]:
    counter = iter(range(10**9))

    async def spawn() -> None:
        leaf = None
        if cgroup is not None:
            leaf = cgroup / f"leaf{next(counter)}"
            leaf.mkdir()
        child = await launcher.spawn(
            executable=TRUE,
            argv=["true"],
            cwd=None,
            env={"PATH": os.environ.get("PATH", "")},
            keep_stdin=False,
            procs_file=str(leaf / "cgroup.procs") if leaf else None,
            limit=65536,
        )
        await child.wait()
        child.close()
        if leaf is not None:
            leaf.rmdir()

    return spawn


async def measure(runs: int, spawn: Callable[[], Awaitable[None]], idle_s: float = 0.0) -> float:
    """Mean ms per spawn-and-wait over ``runs``, each ``idle_s`` after the last
    (the idle time itself not counted)."""
    for _ in range(5):
        await spawn()
    total = 0.0
    for _ in range(runs):
        if idle_s:
            await asyncio.sleep(idle_s)
        start = time.perf_counter()
        await spawn()
        total += time.perf_counter() - start
    return total / runs * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.bench.spawn", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--heap-mib", type=int, default=60)
    parser.add_argument(
        "--idle-ms",
        type=float,
        default=50.0,
        help="the second column: each spawn this long after the last (a server between "
        "requests; a cgroup migration is much dearer then)",
    )
    args = parser.parse_args(argv)
    heap = bytearray(args.heap_mib * 1024 * 1024)
    for offset in range(0, len(heap), 4096):
        heap[offset] = 1  # touch every page: a fork copies the page tables of all of it
    root = resolve_root("auto")
    cgroup = Path(tempfile.mkdtemp(prefix="ccx-spawn-", dir=root)) if root else None
    shim = Launcher()
    cloned = Launcher(into_leaf="clone")
    moved = Launcher(into_leaf="move")
    fallback = Launcher(use_shim=False)
    ways: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("uvloop + preexec_fn (before)", uvloop_preexec),
        ("Popen vfork, no shim", popen_vfork),
    ]
    if shim.shim is not None:
        ways.append(("Launcher shim", launcher_way(shim, None)))
        if cgroup is not None:
            ways.append(("Launcher shim, leaf (the server)", launcher_way(shim, cgroup)))
            ways.append(("Launcher shim, born in a leaf", launcher_way(cloned, cgroup)))
            ways.append(("Launcher shim, moved to a leaf", launcher_way(moved, cgroup)))
    else:
        print(f"no exec shim next to {sys.executable} ({find_shim()}): bash ci/install builds it")
    if cgroup is not None:
        ways.append(("Launcher preexec + cgroup", launcher_way(fallback, cgroup)))
    else:
        print("no writable cgroup2 hierarchy: the cgroup ways are skipped")
    idle_s = args.idle_ms / 1000
    print(f"{'way':32} {'ms per spawn of true':>22} {f'the same, {args.idle_ms:g} ms apart':>26}")
    try:
        for label, spawn in ways:
            ms = uvloop.run(measure(args.runs, spawn))
            apart = uvloop.run(measure(args.runs, spawn, idle_s)) if idle_s else math.nan
            print(f"{label:32} {ms:22.2f} {apart:26.2f}", flush=True)
    finally:
        shim.close()
        cloned.close()
        moved.close()
        fallback.close()
        if cgroup is not None:
            cgroup.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
