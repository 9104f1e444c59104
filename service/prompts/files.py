"""Writing prompt files safely: a lock on their directory for concurrent
``prompts`` processes, and atomic replacement (readers see the old or the new
file whole). The format itself is :mod:`service.prompts.document`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path


def lock_directory(directory: Path) -> int:
    """Take an exclusive ``flock`` on the prompts directory itself (blocking);
    the descriptor to pass to :func:`unlock_directory`. It serialises table
    rewrites of concurrent ``prompts run`` processes, so the last one computes
    from every record. The lock is on the directory, not the file: the file's
    inode changes with each atomic replace."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_directory(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the lock


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file in the same directory,
    fsynced, then renamed over it. Readers see the old or the new file whole."""
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(handle.name, path.stat().st_mode & 0o777)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
