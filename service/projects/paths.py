"""Where a project may live: the path rules of ``project.create``.

A project directory is given as an absolute path that exists, is a directory,
and resolves (symlinks followed) inside one of the configured
``project_roots``. Two projects never nest: a directory inside another
project, or around one, is refused, because two agents would then edit the
same files. Every refusal is an :class:`~service.errors.InvalidPath` whose
message names the rule.

A registered directory is checked again at every use
(:func:`recheck_project_path`): it may have been replaced by a symlink that
leads out of the roots since it was registered, so agents run in its real
path of the moment, and never outside the roots.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from service.errors import InvalidPath


def is_within(path: str, root: str) -> bool:
    """True when the real path ``path`` is ``root`` or below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolve_project_path(path: str, roots: Sequence[Path]) -> str:
    """The real path of a would-be project directory; InvalidPath if refused."""
    if "\0" in path:
        raise InvalidPath("project path must not contain NUL characters")
    if not os.path.isabs(path):
        raise InvalidPath(f"project path must be absolute: {path}", {"rule": "absolute"})
    if not os.path.exists(path):
        raise InvalidPath(f"project path does not exist: {path}", {"rule": "exists"})
    if not os.path.isdir(path):
        raise InvalidPath(f"project path is not a directory: {path}", {"rule": "directory"})
    real = os.path.realpath(path)
    real_roots = [os.path.realpath(root) for root in roots]
    if not any(is_within(real, root) for root in real_roots):
        shown = f"{path} (resolves to {real})" if real != path else path
        raise InvalidPath(
            f"project path is outside the allowed project roots: {shown}",
            {"rule": "roots", "resolved": real, "project_roots": real_roots},
        )
    return real


def check_not_nested(real: str, others: Iterable[tuple[str, str]]) -> None:
    """Refuse ``real`` when it is, is inside, or is around another project's
    path. ``others`` yields ``(name, real_path)`` of registered projects."""
    for name, other in others:
        if real == other:
            raise InvalidPath(
                f"project path is already registered as project {name!r}: {real}",
                {"rule": "unique", "project": name},
            )
        if is_within(real, other):
            raise InvalidPath(
                f"project path is inside project {name!r} ({other}): {real}",
                {"rule": "nested", "project": name},
            )
        if is_within(other, real):
            raise InvalidPath(
                f"project path contains project {name!r} ({other}): {real}",
                {"rule": "nested", "project": name},
            )


def recheck_project_path(path: str, roots: Sequence[Path]) -> str:
    """The real path of a registered project's directory, now; InvalidPath
    (``INVALID_PATH``) when it is gone or now resolves outside the roots."""
    if not os.path.isdir(path):
        raise InvalidPath(
            f"the project directory no longer exists: {path}",
            {"error": "INVALID_PATH", "rule": "exists", "path": path},
        )
    real = os.path.realpath(path)
    real_roots = [os.path.realpath(root) for root in roots]
    if not any(is_within(real, root) for root in real_roots):
        raise InvalidPath(
            f"the project directory has left the allowed project roots: {path} "
            f"now resolves to {real}",
            {"error": "INVALID_PATH", "rule": "roots", "path": path, "resolved": real},
        )
    return real
