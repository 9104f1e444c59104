"""The store's files on disk: the lock that makes a data directory one
server's, the check that the database file is sound, and moving a damaged
one aside."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TextIO

logger = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"


class DataDirInUse(Exception):
    """Another server holds the data directory."""


def take_lock(db_path: Path) -> TextIO:
    """Lock ``NAME.lock`` beside the database for as long as the returned file
    stays open. A second server on the same data directory would take the
    first one's executions for a crash's leftovers and kill them. The kernel
    drops the lock when the process dies, however it dies; children never
    inherit it (Python opens files close-on-exec)."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    handle = open(lock_path, "a+", encoding="ascii")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirInUse(
            f"the data directory {db_path.parent} is in use by another cc-executor "
            f"(pid {holder}); give each server its own CC_EXECUTOR_DATA_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_file(path: Path) -> str | None:
    """Why the database file is unusable, or None (absent and empty files are fine)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None
    if not header:
        return None
    if header != SQLITE_HEADER:
        return "not an SQLite database (bad header)"
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"damaged: {exc}"
    if rows != [("ok",)]:
        return "damaged: " + "; ".join(str(row[0]) for row in rows[:5])
    return None


def move_aside(path: Path, reason: str) -> Path:
    """Rename the database (and its ``-wal``/``-shm``) to ``NAME.corrupt-TIMESTAMP``
    and log it as an error; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    logger.error(
        "store file is damaged; moved aside and starting a fresh one",
        extra={"path": str(path), "moved_to": str(target), "reason": reason},
    )
    return target
