"""``prompts report``: a Markdown review for graduation reviews.

It reads the repository alone (``prompts/evidence/``). Per prompt: the counts
recomputed from the evidence (not the file's claims), the last runs with
their verdicts and reasons and a link to each run's evidence file, the
versions with what changed and how each fared, and a recommendation:

- ``graduate``: at least 10 successes and a ratio of at least 10:1;
- ``reset``: the prompt fails too often to get there (more failures than
  successes over at least 5 counted runs, or its last 3 runs failed):
  revise it, bump its version, and start again;
- ``keep``: keep running it; the line says how many successes are missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.prompts import document, evidence, ledger
from service.prompts.audit import prompt_files
from service.prompts.document import PromptFormatError
from service.prompts.evidence import EvidenceError
from service.prompts.ledger import GRADUATION_RATIO, GRADUATION_SUCCESSES, Record

LAST_RUNS = 10


def recommendation(folded: ledger.Ledger, records: list[Record]) -> str:
    if folded.status == "graduated":
        return (
            f"**graduate**: {folded.success} successes, {folded.failure} failures "
            f"meet >= {GRADUATION_SUCCESSES} at {GRADUATION_RATIO}:1"
        )
    recent = sorted(records, key=lambda r: r.id)[-3:]
    if (folded.total >= 5 and folded.failure > folded.success) or (
        len(recent) == 3 and not any(r.passed for r in recent)
    ):
        return "**reset**: it fails more than it passes; revise it, bump the version"
    needed = max(GRADUATION_SUCCESSES, GRADUATION_RATIO * folded.failure) - folded.success
    return f"**keep**: {needed} more successes without a failure to graduate"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _link(path: Path, base: Path) -> str:
    """A Markdown link target to ``path`` from a file in ``base``."""
    return os.path.relpath(path.resolve(), base.resolve()).replace(os.sep, "/")


def render(directory: Path, base: Path) -> str:
    """The review of every prompt in ``directory``; links are relative to ``base``
    (the directory the review is written to)."""
    lines = ["# Prompt graduation review", ""]
    lines += [
        "Counts are recomputed from the evidence in the repository (`prompts/evidence/`),",
        "not taken from the files; graduation needs at least "
        f"{GRADUATION_SUCCESSES} successes and a ratio of at least {GRADUATION_RATIO}:1.",
        "",
    ]
    where = evidence.directory_of(directory)
    for path in prompt_files(directory):
        try:
            doc = document.load(path)
            start = evidence.counts_from(where, doc.header.name)
            entries = [
                e for e in evidence.entries(where, doc.header.name) if e.record.version >= start
            ]
        except (PromptFormatError, EvidenceError) as exc:
            lines += [f"## {path.stem}", "", f"Not a valid prompt or evidence: {exc}", ""]
            continue
        records = [entry.record for entry in entries]
        folded = ledger.fold(records)
        m = folded.metrics()
        lines += [f"## {doc.header.name} (version {doc.header.version})", ""]
        if doc.header.kind == "agent":
            agent = doc.header.claude_bin or "the server's claude_bin"
            lines += [f"- Runs through: an agent, `{agent}`"]
        lines += [
            f"- Counts: {m.success} successes, {m.failure} failures, ratio {m.ratio}, "
            f"status {m.status}, last run {m.last_updated}",
            f"- Counted since: version {start}",
            f"- Recommendation: {recommendation(folded, records)}",
            "",
        ]
        last = entries[-LAST_RUNS:]
        if last:
            lines += [
                "| Run | Time | Version | Verdict | Reasons | Evidence |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for entry in reversed(last):
                r = entry.record
                reasons = "; ".join(r.reasons) or "-"
                lines.append(
                    f"| {r.id} | {ledger.minute(r.created_at)} | {r.version} | {r.verdict} | "
                    f"{_cell(reasons)} | [{entry.path.name}]({_link(entry.path, base)}) |"
                )
            lines.append("")
        else:
            lines += ["No runs recorded yet.", ""]
        rows = ledger.history(doc.history, folded, doc.header.version, ledger.day(0), start)
        lines += ["| Version | Change and reason | Result |", "| --- | --- | --- |"]
        for row in rows:
            lines.append(f"| {row.version} | {_cell(row.change)} | {_cell(row.result)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
