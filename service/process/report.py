"""What a spawn hands back (:class:`Started`), and the exec shim's report: read
off the event loop, and what it says.

The shim (``shim/cc-executor-exec.c``) writes native ints to a close-on-exec
pipe, so EOF means every writer has exec'd or exited. Without ``@`` (no
clone): nothing when the program was exec'd, or errno. With ``@`` (the shim
was asked to create the program in its leaf): the program's pid (0: none was
started), then errno when it could not be exec'd.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from dataclasses import dataclass

from service.process.sibling import Leader, Sibling


@dataclass(frozen=True, slots=True)
class Started:
    """A spawned process and the parent's ends of its pipes (raw fds)."""

    #: The shim (or, on the fallback path, the program itself).
    popen: Leader
    stdout_fd: int
    stderr_fd: int
    stdin_fd: int | None
    #: The shim's report pipe: EOF once the user's program was exec'd, else an errno.
    report_fd: int | None


async def read_report(fd: int) -> bytes:
    """What the shim wrote to its report pipe, up to EOF, without blocking the
    loop (the shim may wait long for a CPU on a loaded machine). Closes ``fd``."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    done: asyncio.Future[bytes] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(b"".join(chunks))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def parse_report(shim: Leader, report: bytes, cloned: bool) -> tuple[Leader, int]:
    """The user's program and errno (0: it was exec'd). The program is the shim
    itself, or (``cloned``) the child it created, a :class:`Sibling`. When errno
    is set, the caller still reaps the process returned (it exits 127)."""
    values = [
        int.from_bytes(report[i : i + 4], sys.byteorder, signed=True)
        for i in range(0, len(report) - len(report) % 4, 4)
    ]
    if not cloned:
        if not report:
            return shim, 0
        return shim, values[0] if len(report) == 4 else errno.EIO
    pid = values[0] if values and len(report) in (4, 8) else 0
    code = values[1] if len(values) == 2 else (0 if pid else errno.EIO)
    if pid and pid != shim.pid:
        # The shim exits at once; reaped when the child is closed (waiting for
        # it at the spawn would hold the spawn thread on a busy machine).
        return Sibling(pid, shim if isinstance(shim, Sibling) else None), code
    return shim, code
