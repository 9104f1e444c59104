"""``prompts audit --rerun K``: a reviewer's spot check that the evidence is
reproducible, not just self-consistent.

Anyone who can write to the repository can forge a record and its
transcript together, and the audit would find them consistent. Re-running
answers that: for each prompt, K of its recorded runs of the current version
are picked at random and executed again, with fresh markers, through a
private executor (a child server on a free loopback port with a scratch data
directory: never the operator's server or store). The server judges each one
as it judges any run. Nothing is written to the evidence or the tables.

An agent prompt whose header names ``claude_bin`` gets a private executor
running that CLI (``fake-claude`` for C01), found on ``PATH`` or beside the
Python running the tool; its project root is the prompt's working directory.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.client import ExecutorClient
from service.errors import RpcError
from service.prompts import document, runner
from service.prompts.audit import PromptAudit
from service.prompts.executor import LocalExecutor


@dataclass(frozen=True)
class Rerun:
    prompt: str
    original_run: int
    execution_id: str  # the new execution
    passed: bool
    reasons: tuple[str, ...]
    elapsed_s: float


def claude_path(name: str) -> str:
    """The CLI ``name`` on ``PATH``, else beside this Python (a venv's scripts)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def executor_env(doc: document.PromptDocument) -> dict[str, str]:
    """The private executor's settings a prompt needs (agents: CLI and project root)."""
    if doc.header.kind != "agent":
        return {}
    values = runner.placeholder_values(doc, "unused-marker-0000")
    env = {"CC_EXECUTOR_PROJECT_ROOTS": runner.working_dir(doc.header, values)}
    if doc.header.claude_bin:
        env["CC_EXECUTOR_CLAUDE_BIN"] = claude_path(doc.header.claude_bin)
    return env


def choose(result: PromptAudit, k: int, rng: random.Random) -> list[int]:
    """K run numbers of the current version (all of them when fewer)."""
    if result.doc is None:
        return []
    version = result.doc.header.version
    runs = [e.record.id for e in result.entries if e.record.version == version]
    return sorted(rng.sample(runs, min(k, len(runs))))


async def _rerun_group(
    docs: list[tuple[PromptAudit, list[int]]],
    env: dict[str, str],
    token: str | None,
    report: Callable[[Rerun], None],
) -> list[Rerun]:
    done: list[Rerun] = []
    with tempfile.TemporaryDirectory(prefix="cc-executor-rerun-") as scratch:
        local = LocalExecutor(Path(scratch), env=env)
        url = await asyncio.to_thread(local.start)
        try:
            async with ExecutorClient(url, token, max_frame_bytes=None) as client:
                for result, runs in docs:
                    assert result.doc is not None
                    for run in runs:
                        try:
                            outcome = await runner.run_once(client, result.doc)
                        except (runner.RunError, RpcError) as exc:
                            rerun = Rerun(result.name, run, "-", False, (str(exc),), 0.0)
                        else:
                            rerun = Rerun(
                                result.name,
                                run,
                                outcome.execution_id,
                                outcome.record.passed,
                                outcome.record.reasons,
                                outcome.elapsed_s,
                            )
                        report(rerun)
                        done.append(rerun)
        finally:
            await asyncio.to_thread(local.stop)
    return done


async def rerun(
    results: list[PromptAudit],
    k: int,
    report: Callable[[Rerun], None],
    token: str | None = None,
    rng: random.Random | None = None,
) -> list[Rerun]:
    """Re-execute K chosen runs of each audited prompt; every rerun, in order.
    Prompts needing the same executor settings share one private executor
    (started with this environment; ``token`` is the one it then requires).
    Raises :class:`~service.prompts.executor.ExecutorStartError`."""
    rng = rng or random.SystemRandom()
    groups: dict[tuple[tuple[str, str], ...], list[tuple[PromptAudit, list[int]]]] = {}
    for result in results:
        if result.doc is None:
            continue
        runs = choose(result, k, rng)
        if runs:
            key = tuple(sorted(executor_env(result.doc).items()))
            groups.setdefault(key, []).append((result, runs))
    done: list[Rerun] = []
    for key, docs in groups.items():
        done += await _rerun_group(docs, dict(key), token, report)
    return done
