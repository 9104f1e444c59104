"""From an ``execute`` request to what exactly will run.

:func:`build_spec` turns validated params into an :class:`ExecutionSpec`:
the argv (a ``command`` string is split with :mod:`shlex`, never handed to a
shell unless ``shell`` is allowed), the checked ``cwd``, the child's controlled
environment, and the timeout. Every refusal is a typed error naming the rule.
What runs in the child between fork and exec is in :mod:`service.process.launcher`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.errors import InvalidParams, InvalidPath, NotAllowed
from service.params import ExecuteParams
from service.settings import Settings

#: The environment variable every child carries: its execution id. It marks the
#: whole process tree, so descendants that escape the process group are found.
EXECUTION_MARKER = "CC_EXECUTOR_EXECUTION_ID"


@dataclass(frozen=True, slots=True)
class ExecutionSpec:
    """Everything needed to start one execution."""

    argv: list[str]
    cwd: str | None
    env: dict[str, str]
    timeout_s: float | None
    keep_stdin: bool
    shell: bool = False
    project_id: str | None = None
    display: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    #: Longest output line kept for this execution; None: ``settings.max_line_bytes``.
    max_line_bytes: int | None = None
    #: The file exec runs, when it was checked against the allow-list: exec must not
    #: look the name up again (a PATH entry could change in between). None: argv[0].
    executable: str | None = None


#: The server's own configuration (the token above all) never reaches a child,
#: whatever ``pass_env`` says.
SERVER_ENV_PREFIX = "CC_EXECUTOR_"


@functools.lru_cache(maxsize=16)
def _names_matching(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for all of ``patterns`` (None: no pattern): one
    match per name instead of one ``fnmatchcase`` per name and pattern (0.17 ms
    per ``execute`` with the default ``pass_env``)."""
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))


def passed_environment(patterns: Sequence[str], source: Mapping[str, str]) -> dict[str, str]:
    """The part of ``source`` whose names match one of ``patterns`` (shell-style,
    case-sensitive), without the server's own ``CC_EXECUTOR_*`` settings."""
    matching = _names_matching(tuple(patterns))
    if matching is None:
        return {}
    return {
        name: value
        for name, value in source.items()
        if not name.startswith(SERVER_ENV_PREFIX) and matching.match(name)
    }


def resolve_executable(name: str, path: str | None) -> str | None:
    """Where exec will find ``name``: as given when it holds a slash, else on PATH."""
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name, path=path)


def check_allowed(argv0: str, allowed: Sequence[str]) -> str:
    """Refuse ``argv0`` unless it is, character for character, an entry of the
    allow-list; the file exec must run.

    An entry allows exactly what it spells. An entry without a slash is a name:
    ``argv0`` must be that name, and it runs what the name finds on the
    *server's* PATH (the client's ``env`` cannot move it). An entry with a slash
    is a path: ``argv0`` must be that path. A different name or path for the
    same file (a symlink, a hard link, ``bash`` for ``rbash``, ``xz`` for
    ``xzcat``, ``/usr/bin/echo`` for ``echo``) is refused: multi-call programs
    choose what they do by ``argv[0]``, and the child gets the client's
    ``argv[0]`` unchanged.
    """
    if argv0 not in allowed:
        raise NotAllowed(f"command not allowed: {argv0}", {"command": argv0})
    resolved = resolve_executable(argv0, None if "/" in argv0 else os.environ.get("PATH"))
    if resolved is None:
        raise NotAllowed(f"command not allowed: {argv0} (not found)", {"command": argv0})
    # The real file: a symlink swapped after the check cannot change what runs.
    return os.path.realpath(resolved)


def build_spec(
    params: ExecuteParams,
    settings: Settings,
    server_env: Mapping[str, str] | None = None,
) -> ExecutionSpec:
    """Validate an execute request against the settings; raise a typed error if refused."""
    env = passed_environment(settings.pass_env, os.environ if server_env is None else server_env)
    if params.env:
        if settings.allowed_commands:
            loaders = sorted(name for name in params.env if name.startswith("LD_"))
            if loaders:
                raise NotAllowed(
                    f"environment not allowed with an allow-list: {', '.join(loaders)}",
                    {"env": loaders},
                )
        env.update(params.env)

    if params.shell:
        assert params.command is not None
        if settings.allowed_commands:
            raise NotAllowed("shell is refused while an allow-list is configured")
        if not settings.allow_shell:
            raise NotAllowed("shell is disabled on this server (allow_shell is off)")
        argv = ["/bin/sh", "-c", params.command]
        display = params.command
    elif params.command is not None:
        try:
            argv = shlex.split(params.command)
        except ValueError as exc:
            raise InvalidParams(f"cannot split command: {exc}") from None
        if not argv:
            raise InvalidParams("command is empty")
        display = params.command
    else:
        assert params.argv is not None
        argv = list(params.argv)
        display = shlex.join(argv)
    if any("\0" in part for part in argv):
        raise InvalidParams("command must not contain NUL characters")

    executable = None
    if settings.allowed_commands and not params.shell:
        executable = check_allowed(argv[0], settings.allowed_commands)

    cwd = params.cwd
    if cwd is not None:
        if not os.path.isabs(cwd):
            raise InvalidPath(f"cwd must be an absolute path: {cwd}")
        if not os.path.isdir(cwd):
            raise InvalidPath(f"cwd is not an existing directory: {cwd}")

    timeout_s = params.timeout if params.timeout is not None else settings.default_timeout_s
    if timeout_s is not None and timeout_s > settings.max_timeout_s:
        raise InvalidParams(
            f"timeout {timeout_s:g}s is above the maximum of {settings.max_timeout_s:g}s"
        )

    return ExecutionSpec(
        argv=argv,
        cwd=cwd,
        env=env,
        timeout_s=timeout_s,
        keep_stdin=params.stdin,
        shell=params.shell,
        display=display,
        executable=executable,
    )
