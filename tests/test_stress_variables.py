"""``STRESS_*`` variables: Locust's duration forms, and every bad value of
every variable is one line on stderr and exit 2, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress import variables
from stress.settings import DEFAULT_USERS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("40", 40), ("40s", 40), ("2m", 120), ("1h30m", 5400), ("1h", 3600), ("2.5", 3)],
)
def test_durations_take_locusts_forms(text: str, seconds: int) -> None:
    assert variables.read({"STRESS_DURATION": text}).duration_s == seconds


def test_unset_or_empty_means_the_defaults() -> None:
    for env in ({}, dict.fromkeys(("STRESS_DURATION", "STRESS_USERS", "STRESS_WORKERS"), "")):
        given = variables.read(env)
        assert (given.duration_s, given.users, given.spawn_rate) == (None, None, None)
        assert (given.scenarios, given.workers, given.reports) == (DEFAULT_USERS, 0, None)


BAD = [
    ("STRESS_DURATION", "40x"),
    ("STRESS_DURATION", "1.5m"),
    ("STRESS_DURATION", "0"),
    ("STRESS_DURATION", "-3"),
    ("STRESS_DURATION", "inf"),
    ("STRESS_USERS", "two"),
    ("STRESS_USERS", "0"),
    ("STRESS_USERS", "2.5"),
    ("STRESS_SPAWN_RATE", "fast"),
    ("STRESS_SPAWN_RATE", "0"),
    ("STRESS_SCENARIOS", "ControlUser,NoSuchUser"),
    ("STRESS_SCENARIOS", ","),
    ("STRESS_WORKERS", "many"),
    ("STRESS_WORKERS", "-1"),
    ("STRESS_REPORTS", "/etc/passwd"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(variables.VariableError) as caught:
        variables.read({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message


def test_ci_stress_exits_2_with_one_line(tmp_path: Path) -> None:
    """Each bad value through the real launcher: no server, no traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CC_EXECUTOR_", "STRESS_"))}
    bad = [*BAD, ("STRESS_REPORTS", str(Path("/proc/1/nope/reports")))]
    for name, value in bad:
        done = subprocess.run(
            [sys.executable, "-m", "stress.launch"],
            env={**base, name: value},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2, (name, value, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ci/stress: {name}: "), done.stderr
