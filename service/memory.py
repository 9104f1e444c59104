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
import os
import signal
import tracemalloc
from typing import Any

logger = logging.getLogger(__name__)

TOP_ENTRIES = 25

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


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


def release_free_heap() -> int:
    """Hand the allocator's free pages back to the system; returns the bytes
    of resident memory that left (0 where glibc's ``malloc_trim`` is missing).

    Importing a large package leaves the heap full of freed blocks (the
    ``.pyc`` bytes read and unmarshalled, the import machinery's temporaries)
    between the live objects. glibc only gives back the top of the heap by
    itself; ``malloc_trim(0)`` also releases the free pages in the middle, which
    stay reserved and are faulted in again only if the heap grows into them.
    Called once after start-up and once after the MCP endpoint loads: it walks
    the heap (about a millisecond for this server's), so never on a hot path.
    """
    import ctypes

    # The interpreter's own symbols include libc's (no ldconfig lookup); musl
    # has no malloc_trim.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return 0
    before = _rss()
    trim(0)
    return max(0, before - _rss())


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_BYTES


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
