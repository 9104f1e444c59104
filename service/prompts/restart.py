"""``prompts restart``: start a prompt's counts again, through the tool.

Used when the records behind a table cannot be shown (they lived in a store
that is gone) or no longer mean anything. The prompt gets a new version,
an Evolution History row saying why, and ``evidence/<PROMPT>/restart.json``:
counting starts at that version, and the rows of earlier versions stay as
history without counts (the audit leaves them alone). Counts are never
edited by hand: the tables are then rewritten from the evidence.
"""

from __future__ import annotations

import re
import time

from service.prompts import document, evidence, files, ledger
from service.prompts.document import HistoryRow, PromptDocument, PromptFormatError

DEFAULT_REASON = "counts restarted: earlier records were not kept as evidence"


def bump_version(doc: PromptDocument, version: int) -> str:
    """The file's text with ``version = N`` in its Header block set to ``version``."""
    lines = doc.text.split("\n")
    in_header = in_block = False
    for index, line in enumerate(lines):
        if line.startswith("## "):
            in_header = line[3:].strip() == document.HEADER_HEADING
        elif in_header and line.startswith("```"):
            in_block = not in_block
        elif in_block and re.match(r"^version\s*=", line):
            lines[index] = f"version = {version}"
            return "\n".join(lines)
    raise PromptFormatError(f"{doc.path.name}: no 'version = N' line in the Header block")


def restart(doc: PromptDocument, reason: str = DEFAULT_REASON) -> PromptDocument:
    """Restart ``doc``'s counts at a new version (the caller holds the lock)."""
    old = doc.metrics
    version = doc.header.version + 1
    before = f"{old.success}:{old.failure} ({old.status}) at version {doc.header.version}"
    text = bump_version(doc, version)
    bumped = document.parse(text, doc.path)
    today = ledger.day(time.time())
    change = f"{reason[:1].upper()}{reason[1:]} (the table said {before})"
    authored = [*bumped.history, HistoryRow(version, today, change, "no runs yet")]
    empty = ledger.fold([])
    rows = ledger.history(authored, empty, version, today, version)
    evidence.write_restart(doc.path.parent, doc.header.name, version, reason, before)
    out = document.render(bumped, empty.metrics(), rows)
    files.write_atomic(doc.path, out)
    return document.parse(out, doc.path)
