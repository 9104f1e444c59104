"""The judgement of one prompt run. Pure: it sees only what the store kept.

A run passes only when all of these hold, and each one that does not is a
reason in the record:

- the execution finished ``completed`` with exit code 0 (a timeout ends it
  ``timed_out``);
- its unique marker appears in the transcript the store recorded (the
  anti-hallucination rule: output that was not produced by this very run,
  or a claim of success without running, cannot carry it);
- every expected pattern matches somewhere in that transcript.

Patterns may come from a client (``prompts.record``) or from a file someone
else wrote (an evidence record), so they are run with the ``regex`` package:
with ``concurrent=True`` (the GIL is released while matching, so a pattern
searched in a store reader thread does not stall the event loop) and a time
budget for the whole judgement (:data:`PATTERN_BUDGET_S`). A pattern that runs
past it raises :class:`PatternTimeout`: it is refused, never judged either way.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import regex

#: Seconds all the patterns of one judgement may take together.
PATTERN_BUDGET_S = 2.0


class PatternError(ValueError):
    """A pattern is not a valid regular expression; the message says which and why."""


class PatternTimeout(Exception):
    """A pattern ran past the time budget (catastrophic backtracking, usually)."""

    def __init__(self, pattern: str, budget_s: float) -> None:
        super().__init__(
            f"pattern {pattern!r} ran past the {budget_s:g} s budget for matching "
            "(catastrophic backtracking?): rewrite it"
        )
        self.pattern = pattern


def _regex() -> ModuleType:
    """The ``regex`` package, imported on the first judgement: the server
    imports this module at start, and most servers never judge a prompt run,
    so they never pay its ~1.5 MB of resident memory (docs/performance.md)."""
    return importlib.import_module("regex")


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile one expected pattern (multiline, like the judgement uses it)."""
    module = _regex()
    try:
        compiled: regex.Pattern[str] = module.compile(pattern, module.MULTILINE)
        return compiled
    except (module.error, ValueError, OverflowError, RecursionError) as exc:
        raise PatternError(f"pattern {pattern!r} is invalid: {exc}") from None


def missing_patterns(
    patterns: Sequence[str], transcript: str, budget_s: float = PATTERN_BUDGET_S
) -> list[str]:
    """The patterns that match nowhere in ``transcript``. Raises
    :class:`PatternError` for an invalid one and :class:`PatternTimeout` when
    they take more than ``budget_s`` seconds together."""
    deadline = time.monotonic() + budget_s
    missing = []
    for pattern in patterns:
        compiled = compile_pattern(pattern)
        left = deadline - time.monotonic()
        if left <= 0:
            raise PatternTimeout(pattern, budget_s)
        try:
            found = compiled.search(transcript, concurrent=True, timeout=left)
        except TimeoutError:
            raise PatternTimeout(pattern, budget_s) from None
        if found is None:
            missing.append(pattern)
    return missing


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "pass" or "fail"
    reasons: tuple[str, ...]
    transcript_sha256: str
    transcript_bytes: int

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def transcript_text(chunks: Iterable[dict[str, object]]) -> str:
    """The transcript as one text: every stored chunk's data in seq order,
    stdout and stderr interleaved as they were produced."""
    ordered = sorted(chunks, key=lambda chunk: int(chunk.get("seq", 0)))  # type: ignore[call-overload]
    return "".join(str(chunk.get("data", "")) for chunk in ordered)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def judge(
    *,
    state: str,
    exit_code: int | None,
    transcript: str,
    marker: str,
    patterns: Sequence[str],
    timeout_s: float | None = None,
    budget_s: float = PATTERN_BUDGET_S,
) -> Verdict:
    """Judge one run. Raises :class:`PatternError` or :class:`PatternTimeout`
    when a pattern cannot be run (see :func:`missing_patterns`)."""
    reasons: list[str] = []
    if state == "timed_out":
        limit = f" after {timeout_s:g} s" if timeout_s is not None else ""
        reasons.append(f"timed out{limit}")
    elif state != "completed" or exit_code != 0:
        reasons.append(f"ended {state} with exit code {exit_code}")
    if marker not in transcript:
        reasons.append("marker missing from the stored transcript")
    for pattern in missing_patterns(patterns, transcript, budget_s):
        reasons.append(f"expected pattern not found: {pattern}")
    return Verdict(
        "fail" if reasons else "pass",
        tuple(reasons),
        digest(transcript),
        len(transcript.encode("utf-8", "surrogatepass")),
    )
