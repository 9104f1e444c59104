"""Telling an operator what is wrong with their settings: one line per bad
setting, naming its environment variable (the model is :mod:`service.settings`)."""

from __future__ import annotations

from pydantic import ValidationError


class SettingsConflict(ValueError):
    """Two sources of one setting disagree; the server must not guess."""


def describe_error(exc: ValidationError) -> str:
    """One line per bad setting, naming its environment variable."""
    lines = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            name = str(error["loc"][0])
            lines.append(f"invalid setting CC_EXECUTOR_{name.upper()} ({name}): {message}")
        else:
            lines.append(f"invalid settings: {message}")
    return "\n".join(lines)
