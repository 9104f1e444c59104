"""ClusterUser's check of what a session sees after ``attach``: the job's
output from seq 1 with no gap and no duplicate. Pure (no Locust, no I/O), so
it is tested on plain values."""

from __future__ import annotations

from typing import Any

OUTPUT = "process.output"
COMPLETED = "process.completed"


class Stream:
    """What the other node's session saw of the job after ``attach``: every
    chunk in order (seqs count stdout and stderr, the lines are stdout's),
    checked for gaps and duplicates."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.text = ""
        self.completed: dict[str, Any] | None = None

    def take(self, event: dict[str, Any]) -> None:
        if event.get("method") == COMPLETED:
            self.completed = event["params"]
        elif event.get("method") == OUTPUT:
            self.seqs.append(int(event["params"]["seq"]))
            # stdout only: a shell whose child dies of CANCEL's SIGTERM may say
            # "Terminated" on stderr before it acts on its own (seqs count both).
            if event["params"].get("type", "stdout") == "stdout":
                self.text += str(event["params"].get("data", ""))

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def problem(self) -> str | None:
        """Why this is not the job's output from seq 1 with no gap and no
        duplicate, or None when it is."""
        if self.seqs != list(range(1, len(self.seqs) + 1)):
            wrong = next(i for i, seq in enumerate(self.seqs, 1) if seq != i)
            return f"seq {self.seqs[wrong - 1]} where {wrong} was due (of {len(self.seqs)})"
        lines = self.text.splitlines()
        expected = [f"tick {n}" for n in range(1, len(lines) + 1)]
        if lines != expected:
            wrong = next(i for i, (a, b) in enumerate(zip(lines, expected, strict=True)) if a != b)
            return f"line {wrong + 1} is {lines[wrong]!r}, not {expected[wrong]!r}"
        return None
