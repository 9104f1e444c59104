"""``prompts audit --url/--data-dir``: the store and the evidence, against each other.

Only on request: by default the audit reads the repository alone. With a
store, for every audited prompt:

- every record the store holds (of a version counting since the last
  restart) must be in the evidence, matched by execution id, and say the
  same (version, marker, argv, state, exit code, verdict, transcript SHA-256);
- every counted success whose execution the store still holds is re-judged
  from what the store holds, independently of both records: its final state
  and exit code (``status``), its transcript (marker, patterns, the same
  SHA-256 as when it was judged).

Evidence of runs the store never saw (another machine's) is fine: the
repository is where runs from every machine meet.
"""

from __future__ import annotations

from service.prompts import evidence, ledger
from service.prompts.audit import PromptAudit
from service.prompts.ledger import Record
from service.prompts.source import RecordSource
from service.prompts.verdict import PatternError, PatternTimeout, digest, judge

#: The fields a store record and its evidence must agree on.
FIELDS = (
    "version",
    "marker",
    "argv",
    "status",
    "exit_code",
    "verdict",
    "transcript_sha256",
    "transcript_bytes",
)


async def recheck(record: Record, source: RecordSource) -> list[str]:
    """Why a counted success does not hold up against what the store holds
    about its execution (an empty list when the store no longer has it)."""
    where = f"run {record.id} (execution {record.execution_id})"
    stored = await source.stored_run(record.execution_id)
    if stored is None:
        return []
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
    try:
        again = judge(
            state=stored.state,
            exit_code=stored.exit_code if stored.exit_code is not None else record.exit_code,
            transcript=stored.transcript,
            marker=record.marker,
            patterns=record.patterns,
        )
        problems += [f"{where}: {reason} (in the store)" for reason in again.reasons]
    except (PatternError, PatternTimeout) as exc:
        problems.append(f"{where}: {exc}")
    return problems


async def crosscheck(result: PromptAudit, source: RecordSource) -> None:
    """Add to ``result`` every disagreement between the store and the evidence."""
    if result.doc is None:
        return
    where = evidence.directory_of(result.doc.path.parent)
    start = evidence.counts_from(where, result.name)
    kept = {entry.record.execution_id: entry.record for entry in result.entries}
    for stored in await source.records(result.name):
        if stored.version < start:
            continue
        mine = kept.get(stored.execution_id)
        label = f"store record {stored.id} (execution {stored.execution_id})"
        if mine is None:
            result.add(f"{label} is not in the evidence")
            continue
        for name in FIELDS:
            if getattr(stored, name) != getattr(mine, name):
                result.add(
                    f"{label}: the store says {name} {getattr(stored, name)!r}, "
                    f"evidence run {mine.id} {getattr(mine, name)!r}"
                )
    folded = ledger.fold(e.record for e in result.entries if e.record.version >= start)
    by_id = {entry.record.id: entry.record for entry in result.entries}
    for record_id in folded.counted:
        record = by_id[record_id]
        if record.passed:
            for problem in await recheck(record, source):
                result.add(problem)
