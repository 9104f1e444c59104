"""``prompts run``: one verified run of a prompt, and the table rewrite after it.

A run: a fresh unique marker; the prompt's command (placeholders filled)
runs through the executor (``execute``, or ``agent.execute`` in the project
for an agent prompt) with the prompt's timeout; once ``process.completed``
arrives, ``prompts.record`` asks the server to judge the run from the
transcript its store recorded and to keep the record. The live stream is
only shown, never judged. Then, holding the prompts directory's lock, the
prompt's tables are recomputed from *all* its records and the file is
replaced atomically, so concurrent runs leave the file matching the records.
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

from service.client import ConnectionLost, Execution, ExecutorClient
from service.errors import RpcError
from service.prompts import document, ledger
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
            execution = Execution(client, str(result["execution_id"]), result)
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
    return RunOutcome(Record.from_wire(stored), execution.id, time.monotonic() - started)


def rewrite(path: Path, records: list[Record]) -> document.PromptDocument:
    """Recompute ``path``'s tables from ``records`` and replace it atomically.
    The caller holds the directory lock."""
    doc = document.load(path)
    folded = ledger.fold(records)
    today = ledger.day(time.time())
    rows = ledger.history(doc.history, folded, doc.header.version, today)
    text = document.render(doc, folded.metrics(), rows)
    if text != doc.text:
        document.write_atomic(path, text)
    return document.parse(text, path)


async def sync_file(client: ExecutorClient, path: Path, name: str) -> document.PromptDocument:
    """Under the prompts directory's lock, rewrite one prompt file from the
    server's records (the lock is taken in a thread: it may wait)."""
    fd = await asyncio.to_thread(document.lock_directory, path.parent)
    try:
        records = await ServerSource(client).records(name)
        return await asyncio.to_thread(rewrite, path, records)
    finally:
        document.unlock_directory(fd)


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
            outcome = await run_once(client, doc)
        except RunError as exc:
            progress(index + 1, times, None, str(exc))
            raise
        outcomes.append(outcome)
        await sync_file(client, path, doc.header.name)
        progress(index + 1, times, outcome, None)
    return outcomes


def summary(outcomes: list[RunOutcome]) -> dict[str, Any]:
    passed = sum(1 for o in outcomes if o.record.passed)
    return {"runs": len(outcomes), "passed": passed, "failed": len(outcomes) - passed}
