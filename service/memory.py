"""Where the server's memory is, on demand: ``kill -USR2 PID``.

On SIGUSR2 the server logs one line with the allocator's own figures (glibc
``mallinfo2``: bytes in use, free but kept, mmapped) and the resident set;
when it runs under ``PYTHONTRACEMALLOC=1`` it also logs the top allocation
sites (``tracemalloc top``). ``stress/warm_flood.py`` uses it for the
breakdown in docs/performance.md. Nothing is sampled otherwise: the handler
costs nothing until the signal comes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import tracemalloc
from typing import Any

logger = logging.getLogger(__name__)

TOP_ENTRIES = 25


MALLINFO2_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


def allocator_figures() -> dict[str, Any]:
    """glibc's view of the heap (empty where mallinfo2 is missing) and VmRSS."""
    # ctypes only when asked: it is not worth its memory in every server.
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [(field, ctypes.c_size_t) for field in MALLINFO2_FIELDS]

    figures: dict[str, Any] = {}
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is not None:
        mallinfo2.restype = MallInfo2
        info = mallinfo2()
        figures["malloc_in_use_bytes"] = int(info.uordblks)
        figures["malloc_free_kept_bytes"] = int(info.fordblks)
        figures["malloc_mmapped_bytes"] = int(info.hblkhd)
        figures["malloc_arena_bytes"] = int(info.arena)
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                    key, value = line.split(":", 1)
                    figures[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return figures


def log_memory() -> None:
    logger.info("memory", extra=allocator_figures())
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        top = snapshot.statistics("filename")[:TOP_ENTRIES]
        logger.info(
            "tracemalloc top",
            extra={
                "traced_bytes": tracemalloc.get_traced_memory()[0],
                "top": [
                    {"file": str(stat.traceback[0].filename), "bytes": stat.size} for stat in top
                ],
            },
        )


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Log the memory figures on every SIGUSR2 (from the entry point's loop)."""
    loop.add_signal_handler(signal.SIGUSR2, log_memory)
