"""``python -m stress.bench.spawn``: what one spawn of ``true`` costs, by event loop.

Spawns ``true`` the way :class:`service.process.execution.Execution` does (pipes, new
session), waits for it, ``--runs`` times, from a process holding a heap the
size of a running server (``--heap-mib``), under uvloop (libuv forks the
process) and under the standard asyncio loop (CPython's ``_posixsubprocess``
uses vfork when there is no ``preexec_fn``), with and without a
``preexec_fn``. Prints milliseconds per spawn-and-wait.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _pdeathsig() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def spawn_ms(runs: int, preexec: Callable[[], None] | None) -> float:
    options: dict[str, Any] = {"preexec_fn": preexec} if preexec is not None else {}
    start = time.perf_counter()
    for _ in range(runs):
        proc = await asyncio.create_subprocess_exec(
            "true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            **options,
        )
        await proc.wait()
    return (time.perf_counter() - start) / runs * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.bench.spawn", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--heap-mib", type=int, default=60)
    args = parser.parse_args(argv)
    heap = bytearray(args.heap_mib * 1024 * 1024)
    for offset in range(0, len(heap), 4096):
        heap[offset] = 1  # touch every page: a fork copies the page tables of all of it
    for loop_name, run in (("uvloop", uvloop.run), ("asyncio", asyncio.run)):
        for label, preexec in (("preexec_fn", _pdeathsig), ("no preexec_fn", None)):
            ms = run(spawn_ms(args.runs, preexec))
            print(f"{loop_name:8} {label:14} {ms:6.2f} ms per spawn of true", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
