"""The ``STRESS_*`` environment variables of ``ci/stress``, read and checked
before anything starts.

Pure: :func:`read` takes a mapping and returns :class:`Variables` or raises
:class:`VariableError` with one line that names the variable; the launcher
prints it and exits 2. Durations take Locust's own forms (``40``, ``40s``,
``2m``, ``1h30m``) through Locust's own parser, plus decimal seconds.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from stress.settings import DEFAULT_USERS, USER_NAMES

T = TypeVar("T")


class VariableError(ValueError):
    """A ``STRESS_*`` value that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Variables:
    """What the variables ask for; None where a variable is unset (or empty)."""

    duration_s: int | None
    users: int | None
    spawn_rate: float | None
    scenarios: str
    workers: int
    reports: Path | None


def _locust_timespan() -> ModuleType:
    # Locust's parser, loaded from its file: importing the ``locust`` package
    # would monkey-patch this launcher (gevent) before it starts any process.
    spec = importlib.util.find_spec("locust")
    if spec is None or not spec.submodule_search_locations:
        raise VariableError("Locust is not installed: run `make stress` (it installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "util" / "timespan.py"
    module_spec = importlib.util.spec_from_file_location("_locust_timespan", path)
    if module_spec is None or module_spec.loader is None:
        raise VariableError(f"cannot load Locust's time span parser from {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parse_duration(text: str) -> int:
    """Seconds (rounded up) from ``40``, ``2.5``, ``40s``, ``2m`` or ``1h30m``."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = float(_locust_timespan().parse_timespan(text))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a duration: give seconds (40) or Locust's form (40s, 2m, 1h30m)"
            ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a duration above zero")
    return math.ceil(seconds)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{text!r} must be 0 (no workers) or more")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} must be above zero")
    return value


def _scenarios(text: str) -> str:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in USER_NAMES]
    if unknown or not names:
        raise ValueError(
            f"unknown user {', '.join(unknown) or '(none given)'}; "
            f"choose among {', '.join(USER_NAMES)}"
        )
    return ",".join(names)


def _reports(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{text!r} is not a directory")
    return path


def _get(env: Mapping[str, str], name: str, parse: Callable[[str], T]) -> T | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise VariableError(f"{name}: {exc}") from None


def read(env: Mapping[str, str]) -> Variables:
    """Every ``STRESS_*`` variable, checked; the first bad one raises."""
    return Variables(
        duration_s=_get(env, "STRESS_DURATION", parse_duration),
        users=_get(env, "STRESS_USERS", _count),
        spawn_rate=_get(env, "STRESS_SPAWN_RATE", _rate),
        scenarios=_get(env, "STRESS_SCENARIOS", _scenarios) or DEFAULT_USERS,
        workers=_get(env, "STRESS_WORKERS", _workers) or 0,
        reports=_get(env, "STRESS_REPORTS", _reports),
    )
