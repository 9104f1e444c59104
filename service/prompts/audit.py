"""``prompts audit``: prove that every prompt's tables say what its evidence says.

From the repository alone (``prompts/evidence/``, see
:mod:`service.prompts.evidence`), for every prompt file:

- every evidence file is the one the manifest hashed (one changed byte in a
  record, a transcript, a snapshot or the manifest is caught);
- the runs are numbered 1..N (runs of versions before a restart are kept and
  hashed but not counted);
- the Gamification Metrics row, the generated Evolution History rows and the
  per-version results equal what :func:`service.prompts.ledger.fold` computes
  from the evidence (a hand edit shows up here);
- every record has its transcript, and the transcript hashes to what the
  record says (and, when not cut to the cap, to what the server judged);
- every counted success is re-judged from its kept transcript, not from its
  record: ended ``completed`` with exit code 0, marker present, the patterns
  of its version's header found, the marker passed to the command, and the
  argv is that version's command (the placeholders filled with the values
  recorded for that run);
- the current version's header is the one its runs were recorded with.

With a store (``--url`` or ``--data-dir``), :mod:`service.prompts.crosscheck`
also checks the store and the evidence against each other.

Each problem is a :class:`Discrepancy` naming the prompt; the CLI exits
non-zero when any is found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.prompts import document, evidence, ledger
from service.prompts.document import PromptDocument, PromptFormatError
from service.prompts.evidence import Entry, EvidenceError
from service.prompts.verdict import PatternError, PatternTimeout, digest, judge

#: What a Discrepancy names when a problem belongs to no one prompt.
EVIDENCE = "evidence"


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
    entries: list[Entry] = field(default_factory=list)
    doc: PromptDocument | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, message: str) -> None:
        self.problems.append(Discrepancy(self.name, message))


def prompt_files(directory: Path) -> list[Path]:
    """The prompt files of a directory: ``*.md`` except the template and READMEs."""
    return sorted(
        path
        for path in directory.glob("*.md")
        if path.name not in ("TEMPLATE.md", "README.md") and not path.name.startswith(".")
    )


def compare_tables(doc: PromptDocument, folded: ledger.Ledger, counts_from: int = 1) -> list[str]:
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
    counted_rows = [row for row in doc.history if row.version >= counts_from]
    claimed_events = [row for row in counted_rows if row.generated]
    if [r.cells() for r in claimed_events] != [r.cells() for r in folded.events]:
        problems.append(
            f"Evolution History has {len(claimed_events)} graduation/reset rows that do not "
            f"match the {len(folded.events)} the records give"
        )
    for row in counted_rows:
        if row.generated:
            continue
        real_result = folded.by_version.get(row.version, ledger.Tally()).text()
        if row.result != real_result:
            problems.append(
                f"Evolution History version {row.version} says {row.result!r}, "
                f"the records give {real_result!r}"
            )
    return problems


def command_for(snapshot: dict[str, Any], values: dict[str, str]) -> list[str]:
    """A version's command with one run's placeholder values."""
    return [document.substitute(str(word), values) for word in snapshot.get("command", [])]


def argv_problems(snapshot: dict[str, Any], entry: Entry, prompt_file: Path) -> list[str]:
    """Why the run's argv is not its version's own command."""
    record = entry.record
    values = {**entry.placeholders, "marker": record.marker}
    recorded_file = values.get("prompt_file", "")
    parent = os.path.dirname(os.path.dirname(recorded_file))
    if os.path.basename(recorded_file) != prompt_file.name or parent != values.get("repo"):
        return [f"its prompt_file {recorded_file!r} is not this file under its {{repo}}"]
    argv = list(record.argv)
    if snapshot.get("kind", "command") == "command":
        if argv != command_for(snapshot, values):
            return [f"ran {argv!r}, not version {record.version}'s command"]
        return []
    problems = []
    text = document.substitute(str(snapshot.get("prompt_text", "")), values)
    if text not in argv:
        problems.append(f"its agent was not sent version {record.version}'s prompt")
    claude_bin = snapshot.get("claude_bin")
    if claude_bin and (not argv or os.path.basename(argv[0]) != claude_bin):
        problems.append(f"ran {argv[:1]!r}, not the header's claude_bin {claude_bin!r}")
    return problems


def rejudge(where: Path, entry: Entry, snapshot: dict[str, Any], prompt_file: Path) -> list[str]:
    """Why a counted success does not re-judge as one from its kept transcript."""
    record = entry.record
    try:
        kept = evidence.read_transcript(where, entry.transcript_file)
    except EvidenceError as exc:
        return [str(exc)]
    patterns = [str(p) for p in snapshot.get("expect", [])]
    problems = []
    if list(record.patterns) != patterns:
        problems.append(f"its patterns are not version {record.version}'s expect")
    try:
        again = judge(
            state=str(record.status),
            exit_code=record.exit_code,
            transcript=kept,
            marker=record.marker,
            patterns=patterns,
        )
        problems += list(again.reasons)
    except (PatternError, PatternTimeout) as exc:
        problems.append(str(exc))
    if not any(record.marker in word for word in record.argv):
        problems.append("marker was not passed to the command")
    return problems + argv_problems(snapshot, entry, prompt_file)


def transcript_problems(where: Path, entry: Entry) -> list[str]:
    """Why a record's transcript is missing or not the one it names."""
    file = where / entry.transcript_file
    if not file.exists():
        return [f"its transcript {entry.transcript_file} is missing"]
    try:
        kept = evidence.read_transcript(where, entry.transcript_file)
    except EvidenceError as exc:
        return [str(exc)]
    problems = []
    if digest(kept) != entry.kept_sha256 or file.name != f"{entry.kept_sha256}.txt.gz":
        problems.append(f"its transcript {entry.transcript_file} does not hash to its record's")
    elif not entry.truncated and entry.kept_sha256 != entry.record.transcript_sha256:
        problems.append("its transcript is not the one the server judged")
    return problems


def audit_file(path: Path, manifest: dict[str, list[str]]) -> PromptAudit:
    """Audit one prompt file against the evidence (``manifest``: the manifest's
    problems by prompt, from :func:`audit_directory`)."""
    try:
        doc = document.load(path)
    except PromptFormatError as exc:
        result = PromptAudit(path.stem)
        result.add(str(exc))
        return result
    name = doc.header.name
    result = PromptAudit(name, doc=doc)
    for problem in manifest.pop(name, []):
        result.add(problem)
    where = evidence.directory_of(path.parent)
    try:
        entries = evidence.entries(where, name)
        start = evidence.counts_from(where, name)
    except EvidenceError as exc:
        result.add(str(exc))
        return result
    result.entries = entries
    result.records = len(entries)
    for number, entry in enumerate(entries, 1):
        record = entry.record
        label = f"run {record.id} ({entry.path.name})"
        if record.id != number or entry.path.name != f"{record.id:06d}.json":
            result.add(f"{label}: runs must be numbered 1..N, in files NNNNNN.json")
        if record.prompt != name:
            result.add(f"{label}: it is a record of {record.prompt!r}")
        result.problems += [
            Discrepancy(name, f"{label}: {p}") for p in transcript_problems(where, entry)
        ]
    # Runs of versions before a restart are history: kept and hashed, not counted.
    folded = ledger.fold(e.record for e in entries if e.record.version >= start)
    result.metrics = folded.metrics()
    for problem in compare_tables(doc, folded, start):
        result.add(problem)
    snapshots: dict[int, dict[str, Any] | None] = {}
    for entry in entries:
        version = entry.record.version
        if version not in snapshots:
            try:
                snapshots[version] = evidence.read_snapshot(where, name, version)
            except EvidenceError as exc:
                result.add(str(exc))
                snapshots[version] = None
    current = snapshots.get(doc.header.version)
    if current is not None and current != evidence.snapshot_of(doc.header, doc.prompt_text):
        result.add(
            f"version {doc.header.version}'s header changed since its runs were recorded: "
            "bump the version"
        )
    by_id = {entry.record.id: entry for entry in entries}
    for record_id in folded.counted:
        entry = by_id[record_id]
        if not entry.record.passed:
            continue
        result.rechecked += 1
        snapshot = snapshots.get(entry.record.version)
        label = f"run {record_id} (execution {entry.record.execution_id})"
        if snapshot is None:
            result.add(f"{label}: version {entry.record.version} has no header snapshot")
            continue
        for problem in rejudge(where, entry, snapshot, path):
            result.add(f"{label}: {problem}")
    return result


def manifest_by_prompt(where: Path) -> dict[str, list[str]]:
    """The manifest's problems grouped by the prompt they belong to
    (a transcript belongs to the prompts whose records name it)."""
    owners: dict[str, set[str]] = {}
    for prompt in evidence.prompts_with_evidence(where):
        try:
            for entry in evidence.entries(where, prompt):
                owners.setdefault(entry.transcript_file, set()).add(prompt)
        except EvidenceError:
            continue
    grouped: dict[str, list[str]] = {}
    for name, problem in evidence.manifest_problems(where):
        first = name.split("/", 1)[0]
        prompts = owners.get(name) or ({first} if "/" in name and first != "transcripts" else set())
        for prompt in sorted(prompts) or [EVIDENCE]:
            grouped.setdefault(prompt, []).append(f"evidence file {name} {problem}")
    return grouped


def audit_directory(directory: Path) -> list[PromptAudit]:
    """Audit every prompt file of ``directory`` against ``directory/evidence``."""
    where = evidence.directory_of(directory)
    manifest = manifest_by_prompt(where)
    results = []
    for path in prompt_files(directory):
        try:
            results.append(audit_file(path, manifest))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # A record or snapshot whose JSON has the wrong shape: named, not a traceback.
            malformed = PromptAudit(path.stem)
            malformed.add(f"malformed evidence: {exc!r}")
            results.append(malformed)
    known = {result.name for result in results}
    for prompt in evidence.prompts_with_evidence(where):
        if prompt not in known:
            orphan = PromptAudit(prompt)
            orphan.add(f"evidence in {where / prompt} but no prompt file names {prompt!r}")
            results.append(orphan)
    for prompt, problems in manifest.items():
        leftover = next((r for r in results if r.name == prompt), None)
        if leftover is None:
            leftover = PromptAudit(prompt)
            results.append(leftover)
        for problem in problems:
            leftover.add(problem)
    return results
