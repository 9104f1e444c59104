"""``prompts run``: one verified run of a prompt, and the table rewrite after it.

A run: a fresh unique marker; the prompt's command (placeholders filled)
runs through the executor (``execute``, or ``agent.execute`` in the project
for an agent prompt) with the prompt's timeout; once ``process.completed``
arrives, ``prompts.record`` asks the server to judge the run from the
transcript its store recorded and to keep the record. The live stream is
only shown, never judged. Then, holding the prompts directory's lock, the
record and the stored transcript are exported to ``prompts/evidence/``
(:mod:`service.prompts.evidence`), the prompt's tables are recomputed from
*all* its evidence and the file is replaced atomically, so concurrent runs
leave the file matching the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.client import ConnectionLost, ExecutorClient, RemoteExecution
from service.errors import RpcError
from service.prompts import document, evidence, files, ledger
from service.prompts.ledger import Record
from service.prompts.source import ServerSource

#: Extra seconds to wait for ``process.completed`` beyond the prompt's timeout
#: (the kill ladder's grace and the last chunks).
COMPLETION_SLACK_S = 30.0


class RunError(Exception):
    """A run could not be made (the executor refused it); nothing was recorded."""


def new_marker(name: str) -> str:
    return f"PROMPT-MARKER-{name}-{uuid.uuid4().hex}"


def placeholder_values(doc: document.PromptDocument, marker: str) -> dict[str, str]:
    path = doc.path.resolve()
    return {
        "marker": marker,
        "prompt_file": str(path),
        "repo": str(path.parent.parent),
        "python": sys.executable,
    }


def working_dir(header: document.Header, values: dict[str, str]) -> str:
    """The run's directory (the agent's project): ``cwd`` from the header, else
    the repository; symlinks resolved, as the project registry stores paths."""
    cwd = document.substitute(header.cwd, values) if header.cwd else values["repo"]
    return os.path.realpath(cwd)


@dataclass
class RunOutcome:
    record: Record
    execution_id: str
    elapsed_s: float
    #: The placeholder values the command was built with (kept with the evidence).
    placeholders: dict[str, str]
    #: Its run number in the evidence, once exported (the store's id is ``record.id``).
    evidence_run: int | None = None


async def _project_for(client: ExecutorClient, name: str, path: str) -> str:
    """The id of the project registered for ``path`` (created when missing)."""
    listing = await client.call("project.list", {})
    for project in listing["projects"]:
        if project["path"] == path or project["name"] == name:
            return str(project["project_id"])
    created = await client.call("project.create", {"name": name, "path": path})
    return str(created["project_id"])


async def run_once(
    client: ExecutorClient,
    doc: document.PromptDocument,
    extra_env: dict[str, str] | None = None,
) -> RunOutcome:
    """Run the prompt once and return its stored record. ``extra_env`` is added
    to the command's environment (tests mark their processes with it)."""
    header = doc.header
    marker = new_marker(header.name)
    values = placeholder_values(doc, marker)
    cwd = working_dir(header, values)
    started = time.monotonic()
    try:
        if header.kind == "agent":
            project_id = await _project_for(client, f"prompt-{header.name}", cwd)
            text = document.substitute(doc.prompt_text, values)
            result = await client.call(
                "agent.execute",
                {
                    "project_id": project_id,
                    "prompt": text,
                    "timeout": header.timeout_s,
                    "resume": False,  # each run is judged on its own, in a fresh session
                    "env": extra_env or None,
                },
            )
            execution = RemoteExecution(client, str(result["execution_id"]), result)
        else:
            argv = [document.substitute(word, values) for word in header.command]
            execution = await client.execute(
                argv=argv,
                cwd=cwd,
                timeout=header.timeout_s,
                env={**(extra_env or {}), "PROMPT_MARKER": marker, "PROMPT_NAME": header.name},
            )
    except RpcError as exc:
        raise RunError(f"{header.name}: the executor refused the run: {exc.message}") from None
    try:
        await execution.wait(header.timeout_s + COMPLETION_SLACK_S)
    except (TimeoutError, ConnectionLost) as exc:
        with contextlib.suppress(RpcError, ConnectionLost):
            await execution.cancel()
        raise RunError(
            f"{header.name}: no process.completed for {execution.id} ({exc!r}); nothing recorded"
        ) from None
    stored = await client.call(
        "prompts.record",
        {
            "prompt": header.name,
            "version": header.version,
            "execution_id": execution.id,
            "marker": marker,
            "patterns": list(header.expect),
            "timeout_s": header.timeout_s,
        },
        timeout=120.0,
    )
    return RunOutcome(Record.from_wire(stored), execution.id, time.monotonic() - started, values)


def rewrite(path: Path) -> document.PromptDocument:
    """Recompute ``path``'s tables from its evidence and replace it atomically.
    The caller holds the directory lock."""
    doc = document.load(path)
    where = evidence.directory_of(path.parent)
    start = evidence.counts_from(where, doc.header.name)
    entries = evidence.entries(where, doc.header.name)
    folded = ledger.fold(e.record for e in entries if e.record.version >= start)
    today = ledger.day(time.time())
    rows = ledger.history(doc.history, folded, doc.header.version, today, start)
    text = document.render(doc, folded.metrics(), rows)
    if text != doc.text:
        files.write_atomic(path, text)
    return document.parse(text, path)


def _export_and_rewrite(
    path: Path, outcome: RunOutcome, transcript: str
) -> document.PromptDocument:
    doc = document.load(path)
    entry = evidence.export(path.parent, doc, outcome.record, transcript, outcome.placeholders)
    outcome.evidence_run = entry.record.id
    return rewrite(path)


async def sync_file(
    client: ExecutorClient, path: Path, outcome: RunOutcome
) -> document.PromptDocument:
    """Export one recorded run (with the transcript the server's store holds)
    to the evidence and rewrite the prompt file from it, under the prompts
    directory's lock (taken in a thread: it may wait)."""
    stored = await ServerSource(client).stored_run(outcome.execution_id)
    if stored is None:
        raise RunError(
            f"{outcome.record.prompt}: the store no longer has execution {outcome.execution_id}"
        )
    fd = await asyncio.to_thread(files.lock_directory, path.parent)
    try:
        return await asyncio.to_thread(_export_and_rewrite, path, outcome, stored.transcript)
    except evidence.EvidenceError as exc:
        raise RunError(str(exc)) from None
    finally:
        files.unlock_directory(fd)


Progress = Callable[[int, int, RunOutcome | None, str | None], None]


async def run_many(
    client: ExecutorClient,
    path: Path,
    times: int,
    progress: Progress,
) -> list[RunOutcome]:
    """Run the prompt ``times`` times, one after the other, rewriting the
    file after each run; ``progress(done, times, outcome, error)`` after each."""
    outcomes: list[RunOutcome] = []
    for index in range(times):
        doc = document.load(path)  # re-read: a human may bump the version meanwhile
        try:
            evidence.check_version(path.parent, doc)
        except evidence.EvidenceError as exc:
            raise RunError(str(exc)) from None
        try:
            outcome = await run_once(client, doc)
        except RunError as exc:
            progress(index + 1, times, None, str(exc))
            raise
        outcomes.append(outcome)
        await sync_file(client, path, outcome)
        progress(index + 1, times, outcome, None)
    return outcomes


def summary(outcomes: list[RunOutcome]) -> dict[str, Any]:
    passed = sum(1 for o in outcomes if o.record.passed)
    return {"runs": len(outcomes), "passed": passed, "failed": len(outcomes) - passed}
