"""``prompts report``: a Markdown review for graduation reviews.

Per prompt: the counts recomputed from the records (not the file's claims),
the last runs with their verdicts and reasons, the versions with what changed
and how each fared, and a recommendation:

- ``graduate``: at least 10 successes and a ratio of at least 10:1;
- ``reset``: the prompt fails too often to get there (more failures than
  successes over at least 5 counted runs, or its last 3 runs failed):
  revise it, bump its version, and start again;
- ``keep``: keep running it; the line says how many successes are missing.
"""

from __future__ import annotations

from pathlib import Path

from service.prompts import document, ledger
from service.prompts.audit import prompt_files
from service.prompts.document import PromptFormatError
from service.prompts.ledger import GRADUATION_RATIO, GRADUATION_SUCCESSES, Record
from service.prompts.source import RecordSource

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


async def render(directory: Path, source: RecordSource) -> str:
    lines = ["# Prompt graduation review", ""]
    lines += [
        "Counts are recomputed from the store's records, not taken from the files;",
        f"graduation needs at least {GRADUATION_SUCCESSES} successes and a ratio of at least "
        f"{GRADUATION_RATIO}:1.",
        "",
    ]
    for path in prompt_files(directory):
        try:
            doc = document.load(path)
        except PromptFormatError as exc:
            lines += [f"## {path.stem}", "", f"Not a valid prompt file: {exc}", ""]
            continue
        records = await source.records(doc.header.name)
        folded = ledger.fold(records)
        m = folded.metrics()
        lines += [
            f"## {doc.header.name} (version {doc.header.version})",
            "",
            f"- Counts: {m.success} successes, {m.failure} failures, ratio {m.ratio}, "
            f"status {m.status}, last run {m.last_updated}",
            f"- Recommendation: {recommendation(folded, records)}",
            "",
        ]
        last = sorted(records, key=lambda r: r.id)[-LAST_RUNS:]
        if last:
            lines += [
                "| Run | Time | Version | Verdict | Reasons | Execution |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for r in reversed(last):
                reasons = "; ".join(r.reasons) or "-"
                lines.append(
                    f"| {r.id} | {ledger.minute(r.created_at)} | {r.version} | {r.verdict} | "
                    f"{_cell(reasons)} | `{r.execution_id}` |"
                )
            lines.append("")
        else:
            lines += ["No runs recorded yet.", ""]
        rows = ledger.history(doc.history, folded, doc.header.version, ledger.day(0))
        lines += ["| Version | Change and reason | Result |", "| --- | --- | --- |"]
        for row in rows:
            lines.append(f"| {row.version} | {_cell(row.change)} | {_cell(row.result)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
