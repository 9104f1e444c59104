"""``prompts audit``: prove that every prompt's tables say what the records say.

For every prompt file:

- the Gamification Metrics row and the generated Evolution History rows
  (graduations, resets) and the per-version results must equal what
  :func:`service.prompts.ledger.fold` computes from the store's records;
  a hand edit shows up here;
- every counted success is re-judged from what the store holds about its
  execution, independently of the record: its final state (and exit code
  where the source exposes it), its transcript (marker present, expected
  patterns found, same SHA-256 as when it was recorded); for the prompt's
  current version the recorded argv must be the prompt's own command with
  that run's marker.

Each problem is a :class:`Discrepancy`; the CLI exits non-zero when any is found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.prompts import document, ledger
from service.prompts.document import PromptDocument, PromptFormatError
from service.prompts.ledger import Record
from service.prompts.runner import placeholder_values
from service.prompts.source import RecordSource
from service.prompts.verdict import digest, judge


@dataclass(frozen=True)
class Discrepancy:
    prompt: str
    message: str

    def __str__(self) -> str:
        return f"{self.prompt}: {self.message}"


@dataclass
class PromptAudit:
    name: str
    records: int = 0
    rechecked: int = 0
    problems: list[Discrepancy] = field(default_factory=list)
    metrics: document.MetricsRow | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def prompt_files(directory: Path) -> list[Path]:
    """The prompt files of a directory: ``*.md`` except the template and READMEs."""
    return sorted(
        path
        for path in directory.glob("*.md")
        if path.name not in ("TEMPLATE.md", "README.md") and not path.name.startswith(".")
    )


def compare_tables(doc: PromptDocument, folded: ledger.Ledger) -> list[str]:
    problems = []
    want = folded.metrics()
    have = doc.metrics
    for label, claimed, real in (
        ("Success", have.success, want.success),
        ("Failure", have.failure, want.failure),
        ("Total", have.total, want.total),
        ("Ratio", have.ratio, want.ratio),
        ("Status", have.status, want.status),
        ("Last Updated", have.last_updated, want.last_updated),
    ):
        if claimed != real:
            problems.append(f"table says {label} {claimed}, the records give {real}")
    claimed_events = [row for row in doc.history if row.generated]
    if [r.cells() for r in claimed_events] != [r.cells() for r in folded.events]:
        problems.append(
            f"Evolution History has {len(claimed_events)} graduation/reset rows that do not "
            f"match the {len(folded.events)} the records give"
        )
    for row in doc.history:
        if row.generated:
            continue
        real_result = folded.by_version.get(row.version, ledger.Tally()).text()
        if row.result != real_result:
            problems.append(
                f"Evolution History version {row.version} says {row.result!r}, "
                f"the records give {real_result!r}"
            )
    return problems


def expected_argv(doc: PromptDocument, marker: str) -> list[str] | None:
    if doc.header.kind != "command":
        return None
    values = placeholder_values(doc, marker)
    return [document.substitute(word, values) for word in doc.header.command]


async def recheck(doc: PromptDocument, record: Record, source: RecordSource) -> list[str]:
    """Why a counted success does not hold up against what the store holds."""
    where = f"run {record.id} (execution {record.execution_id})"
    stored = await source.stored_run(record.execution_id)
    if stored is None:
        return [f"{where}: the store no longer has its execution and transcript"]
    problems = []
    if stored.state != record.status:
        problems.append(
            f"{where}: the store says it ended {stored.state}, the record {record.status}"
        )
    if stored.exit_code is not None and stored.exit_code != record.exit_code:
        problems.append(
            f"{where}: the store says exit code {stored.exit_code}, the record {record.exit_code}"
        )
    if digest(stored.transcript) != record.transcript_sha256:
        problems.append(f"{where}: the stored transcript changed since it was judged")
    again = judge(
        state=stored.state,
        exit_code=stored.exit_code if stored.exit_code is not None else record.exit_code,
        transcript=stored.transcript,
        marker=record.marker,
        patterns=record.patterns,
    )
    problems += [f"{where}: {reason}" for reason in again.reasons]
    if record.version == doc.header.version:
        argv = expected_argv(doc, record.marker)
        if argv is not None and list(record.argv) != argv:
            problems.append(f"{where}: ran {record.argv!r}, not this prompt's command")
    return problems


async def audit_file(path: Path, source: RecordSource) -> PromptAudit:
    try:
        doc = document.load(path)
    except PromptFormatError as exc:
        result = PromptAudit(path.stem)
        result.problems.append(Discrepancy(path.stem, str(exc)))
        return result
    name = doc.header.name
    result = PromptAudit(name)
    records = await source.records(name)
    result.records = len(records)
    folded = ledger.fold(records)
    result.metrics = folded.metrics()
    result.problems += [Discrepancy(name, p) for p in compare_tables(doc, folded)]
    by_id = {record.id: record for record in records}
    for record_id in folded.counted:
        record = by_id[record_id]
        if not record.passed:
            continue
        result.rechecked += 1
        result.problems += [Discrepancy(name, p) for p in await recheck(doc, record, source)]
    return result


async def audit_directory(directory: Path, source: RecordSource) -> list[PromptAudit]:
    return [await audit_file(path, source) for path in prompt_files(directory)]
