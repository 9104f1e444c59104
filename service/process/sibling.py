"""A child of the server that :mod:`subprocess` did not start.

The launcher starts the exec shim with :func:`os.posix_spawn`, and on the
cgroup backend the shim may clone the user's program straight into its leaf
cgroup with ``CLONE_PARENT`` (see ``shim/cc-executor-exec.c``): the program is
then the server's own child, a sibling of the shim. :class:`Sibling` is the
handle of either, with the part of the ``Popen`` interface that
:class:`~service.process.child.Child` uses. It is waited for through a pidfd
(``waitid(P_PIDFD)``), opened while the process is an unreaped child of ours,
so its pid cannot be reused under the handle.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Protocol


class Leader(Protocol):
    """What :class:`~service.process.child.Child` needs of its process: a
    :class:`subprocess.Popen` or a :class:`Sibling`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def kill(self) -> None: ...


def _returncode(info: os.waitid_result) -> int:
    """``Popen.returncode``'s convention: the exit status, or minus the signal."""
    if info.si_code == os.CLD_EXITED:
        return int(info.si_status)
    return -int(info.si_status)


class Sibling:
    """A child of this process created by another of its children (see above)."""

    def __init__(self, pid: int, shim: Sibling | None = None) -> None:
        self._pid = pid
        #: The shim that cloned it: it exits at once, and is reaped by :meth:`close`.
        self._shim = shim
        self._returncode: int | None = None
        self._pidfd: int | None = os.pidfd_open(pid)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def _reap(self, options: int) -> int | None:
        if self._returncode is not None or self._pidfd is None:
            return self._returncode
        info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | options)
        if info is None or info.si_pid == 0:
            return None
        self._returncode = _returncode(info)
        self.close()
        return self._returncode

    def poll(self) -> int | None:
        """The exit status once it exited (it is reaped then), else None."""
        return self._reap(os.WNOHANG)

    def wait(self) -> int:
        """Block until it exits; its exit status."""
        returncode = self._reap(0)
        assert returncode is not None
        return returncode

    def kill(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def close(self) -> None:
        """Forget the pidfd and reap the shim (a process not reaped by then
        stays a zombie until the reaper's sweep)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        shim, self._shim = self._shim, None
        if shim is not None:
            with contextlib.suppress(ChildProcessError):  # the reaper's sweep took it
                shim.poll()
            shim.close()
