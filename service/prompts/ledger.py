"""Records -> what a prompt's tables must say. Pure: no I/O.

The counts are a fold over a prompt's records in the order the store
assigned them (their ``id``), so they never depend on who rewrote the file
last, and concurrent runs cannot lose or double a count:

- a pass adds a success; a fail adds a failure;
- a prompt *graduates* the first time it has at least
  :data:`GRADUATION_SUCCESSES` successes and successes >= :data:`GRADUATION_RATIO`
  x failures: an evolution row ``Graduated ...`` is added;
- a fail while graduated *resets* the counts to 0:0 (that failing run is the
  reason, not a count) with an evolution row ``Reset ...`` saying why; the
  status stays ``reset`` until the prompt graduates again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.prompts.document import HistoryRow, MetricsRow

GRADUATION_SUCCESSES = 10
GRADUATION_RATIO = 10


@dataclass(frozen=True)
class Record:
    """One verified run, as the store keeps it (table ``prompt_runs``)."""

    id: int
    prompt: str
    version: int
    execution_id: str
    marker: str
    verdict: str  # "pass" or "fail"
    reasons: tuple[str, ...]
    transcript_sha256: str
    transcript_bytes: int
    created_at: float
    argv: tuple[str, ...] = ()
    status: str | None = None
    exit_code: int | None = None
    patterns: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Record:
        return cls(
            id=int(data["id"]),
            prompt=str(data["prompt"]),
            version=int(data["version"]),
            execution_id=str(data["execution_id"]),
            marker=str(data["marker"]),
            verdict=str(data["verdict"]),
            reasons=tuple(data.get("reasons") or ()),
            transcript_sha256=str(data["transcript_sha256"]),
            transcript_bytes=int(data["transcript_bytes"]),
            created_at=float(data["created_at"]),
            argv=tuple(data.get("argv") or ()),
            status=data.get("state"),
            exit_code=data.get("exit_code"),
            patterns=tuple(data.get("patterns") or ()),
        )


def day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def minute(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def ratio_text(success: int, failure: int) -> str:
    """``10.0:1`` style; with no failure, ``N:0``."""
    if failure == 0:
        return f"{success}:0"
    return f"{success / failure:.1f}:1"


def meets_graduation(success: int, failure: int) -> bool:
    return success >= GRADUATION_SUCCESSES and success >= GRADUATION_RATIO * failure


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0

    def text(self) -> str:
        if not self.passed and not self.failed:
            return "no runs yet"
        return f"{self.passed} pass, {self.failed} fail"


@dataclass
class Ledger:
    """The state of one prompt after folding its records."""

    success: int = 0
    failure: int = 0
    status: str = "active"
    last_at: float | None = None
    events: list[HistoryRow] = field(default_factory=list)
    by_version: dict[int, Tally] = field(default_factory=dict)
    #: ids of the records that the current counts include (audit re-checks these).
    counted: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.success + self.failure

    def metrics(self) -> MetricsRow:
        return MetricsRow(
            self.success,
            self.failure,
            self.total,
            ratio_text(self.success, self.failure),
            minute(self.last_at) if self.last_at is not None else "never",
            self.status,
        )


def fold(records: Iterable[Record]) -> Ledger:
    """Fold records (any order; sorted by id here) into counts and events."""
    ledger = Ledger()
    for record in sorted(records, key=lambda r: r.id):
        ledger.last_at = record.created_at
        tally = ledger.by_version.setdefault(record.version, Tally())
        if record.passed:
            tally.passed += 1
        else:
            tally.failed += 1
        if not record.passed and ledger.status == "graduated":
            why = "; ".join(record.reasons) or "failed"
            ledger.events.append(
                HistoryRow(
                    record.version,
                    day(record.created_at),
                    f"Reset to 0:0: run {record.id} (execution {record.execution_id}) "
                    f"failed after graduation: {why}",
                    f"reset after {ledger.success}:{ledger.failure}",
                )
            )
            ledger.success = ledger.failure = 0
            ledger.counted = []
            ledger.status = "reset"
            continue
        if record.passed:
            ledger.success += 1
        else:
            ledger.failure += 1
        ledger.counted.append(record.id)
        if ledger.status != "graduated" and meets_graduation(ledger.success, ledger.failure):
            ledger.status = "graduated"
            ratio = ratio_text(ledger.success, ledger.failure)
            ledger.events.append(
                HistoryRow(
                    record.version,
                    day(record.created_at),
                    f"Graduated at run {record.id}: {ledger.success} successes, "
                    f"{ledger.failure} failures (ratio {ratio},"
                    f" needs >= {GRADUATION_SUCCESSES} and {GRADUATION_RATIO}:1)",
                    "graduated",
                )
            )
    return ledger


def history(
    authored: Sequence[HistoryRow],
    ledger: Ledger,
    current_version: int,
    today: str,
    counts_from: int = 1,
) -> list[HistoryRow]:
    """The Evolution History table: the authored rows (one per version, their
    Result recomputed from the records), a placeholder row for any version
    that has none, and the generated graduation and reset rows. Rows of
    versions before ``counts_from`` (counts restarted) are history without
    counts: kept as they are."""
    rows: list[HistoryRow] = []
    seen: set[int] = set()
    for row in authored:
        if row.version < counts_from:
            rows.append(row)
            seen.add(row.version)
            continue
        if row.generated:
            continue
        tally = ledger.by_version.get(row.version, Tally())
        rows.append(HistoryRow(row.version, row.date, row.change, tally.text()))
        seen.add(row.version)
    for version in sorted({current_version, *ledger.by_version} - seen):
        tally = ledger.by_version.get(version, Tally())
        rows.append(
            HistoryRow(
                version, today, f"Version {version}: describe the change and why", tally.text()
            )
        )
    order = {id(row): index for index, row in enumerate(rows)}
    events = list(ledger.events)
    merged = rows + events
    # Authored rows first within a version, then that version's events by date.
    merged.sort(key=lambda r: (r.version, r.generated, r.date, order.get(id(r), 0)))
    return merged
