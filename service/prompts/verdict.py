"""The judgement of one prompt run. Pure: it sees only what the store kept.

A run passes only when all of these hold, and each one that does not is a
reason in the record:

- the execution finished ``completed`` with exit code 0 (a timeout ends it
  ``timed_out``);
- its unique marker appears in the transcript the store recorded (the
  anti-hallucination rule: output that was not produced by this very run,
  or a claim of success without running, cannot carry it);
- every expected pattern matches somewhere in that transcript.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
) -> Verdict:
    reasons: list[str] = []
    if state == "timed_out":
        limit = f" after {timeout_s:g} s" if timeout_s is not None else ""
        reasons.append(f"timed out{limit}")
    elif state != "completed" or exit_code != 0:
        reasons.append(f"ended {state} with exit code {exit_code}")
    if marker not in transcript:
        reasons.append("marker missing from the stored transcript")
    for pattern in patterns:
        if not re.search(pattern, transcript, re.MULTILINE):
            reasons.append(f"expected pattern not found: {pattern}")
    return Verdict(
        "fail" if reasons else "pass",
        tuple(reasons),
        digest(transcript),
        len(transcript.encode("utf-8", "surrogatepass")),
    )
