"""``cc-executor prompts``: list, new, run, audit, report.

Records live in the executor's store (namespace ``prompts``) and only the
server writes them, after judging a run from its own stored transcript.
Where the commands find them:

- ``run``: through ``--url`` (with ``--token``); without it, through the
  server configured by the settings (``CC_EXECUTOR_HOST``/``PORT``) when one
  answers, else through a private executor started on a free loopback port
  with the data directory (``--data-dir`` always starts a private one).
- ``audit`` and ``report`` read the repository alone (``prompts/evidence/``);
  ``audit --url`` (or ``--data-dir``, through a private executor on it) also
  checks that store against the evidence, and ``audit --rerun K`` re-executes
  runs through a private executor.
- ``list``, ``new`` and ``restart`` read and write prompt files (and the
  evidence) only.

Exit codes: 0 success; 1 a run failed or the audit found discrepancies;
2 bad usage, an invalid prompt file, or no executor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from service.client.commands import CommandError
from service.errors import RpcError
from service.prompts import (
    audit,
    connect,
    crosscheck,
    document,
    evidence,
    files,
    report,
    rerun,
    restart,
    runner,
)
from service.prompts.executor import ExecutorStartError
from service.prompts.ledger import day
from service.prompts.source import SourceError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prompts", help="self-improving prompts: verified runs, graduation, audit"
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("prompts"), help="the prompts directory (./prompts)"
    )
    actions = parser.add_subparsers(dest="prompts_command", required=True)

    actions.add_parser("list", help="every prompt with its counts, ratio and status")

    new = actions.add_parser("new", help="a new prompt file from the template")
    new.add_argument("name", help="the prompt's name (letters, digits, '_', '.', '-')")

    def server_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", help="a running executor, ws://HOST:PORT/ws/mcp")
        sub.add_argument("--token", help="its token (default: $CC_EXECUTOR_TOKEN)")
        sub.add_argument("--data-dir", type=Path, help="the store's data directory")

    run = actions.add_parser("run", help="run a prompt through the executor and record it")
    run.add_argument("name", help="the prompt's name or file")
    run.add_argument("--times", type=int, default=1, help="how many runs, one after another")
    server_options(run)

    audit_parser = actions.add_parser(
        "audit",
        help="check every table against the evidence in the repository "
        "(and, with --url or --data-dir, against that store)",
    )
    audit_parser.add_argument("names", nargs="*", help="only these prompts (default: all)")
    audit_parser.add_argument(
        "--rerun",
        type=int,
        default=0,
        metavar="K",
        help="also re-execute K random recorded runs of each prompt's current version "
        "through a private executor",
    )
    server_options(audit_parser)

    report_parser = actions.add_parser(
        "report", help="a Markdown graduation review from the evidence"
    )
    report_parser.add_argument("--output", type=Path, help="write it here instead of stdout")

    restart_parser = actions.add_parser(
        "restart", help="restart a prompt's counts at a new version, with a history row"
    )
    restart_parser.add_argument("name", help="the prompt's name or file")
    restart_parser.add_argument(
        "--reason", default=restart.DEFAULT_REASON, help="why (the Evolution History row)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.prompts_command == "list":
            return list_prompts(args.dir)
        if args.prompts_command == "new":
            return new_prompt(args.dir, args.name)
        if args.prompts_command == "restart":
            return restart_prompt(args.dir, args.name, args.reason)
        if args.prompts_command == "report":
            return report_prompts(args)
        return asyncio.run(_run_async(args))
    except CommandError as exc:
        print(f"cc-executor prompts: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cc-executor prompts: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (``| head``) went away: not an error; silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --- list and new ------------------------------------------------------------


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def list_prompts(directory: Path) -> int:
    if not directory.is_dir():
        raise CommandError(f"no prompts directory at {directory}")
    rows = [["NAME", "VERSION", "SUCCESS", "FAILURE", "TOTAL", "RATIO", "STATUS", "LAST UPDATED"]]
    invalid = []
    for path in audit.prompt_files(directory):
        try:
            doc = document.load(path)
        except document.PromptFormatError as exc:
            invalid.append(str(exc))
            continue
        m = doc.metrics
        rows.append(
            [
                doc.header.name,
                str(doc.header.version),
                str(m.success),
                str(m.failure),
                str(m.total),
                m.ratio,
                m.status,
                m.last_updated,
            ]
        )
    print(_table(rows))
    for problem in invalid:
        print(f"invalid: {problem}", file=sys.stderr)
    return 2 if invalid else 0


def template_path(directory: Path) -> Path:
    local = directory / "TEMPLATE.md"
    if local.exists():
        return local
    return Path(__file__).resolve().parents[2] / "prompts" / "TEMPLATE.md"


def new_prompt(directory: Path, name: str) -> int:
    if not document.NAME_RE.fullmatch(name):
        raise CommandError(
            f"invalid name {name!r}: letters, digits, '_', '.', '-', at most 100, "
            "starting with a letter or digit"
        )
    target = directory / f"{name}.md"
    if target.exists():
        raise CommandError(f"{target} already exists")
    source = template_path(directory)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read the template {source}: {exc.strerror}") from None
    text = text.replace("PROMPT_NAME", name).replace("YYYY-MM-DD", day(time.time()))
    document.parse(text, target)  # the template must yield a valid prompt
    directory.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as handle:
        handle.write(text)
    print(f"created {target}: edit its Header (command, expect) and Prompt, then run it")
    return 0


# --- run, audit, report ----------------------------------------------------------


def find_prompt(directory: Path, name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix == ".md" and candidate.exists():
        return candidate
    direct = directory / f"{name}.md"
    if direct.exists():
        return direct
    for path in audit.prompt_files(directory) if directory.is_dir() else []:
        with contextlib.suppress(document.PromptFormatError):
            if document.load(path).header.name.lower() == name.lower():
                return path
    raise CommandError(f"no prompt {name!r} in {directory}")


class ProgressLine:
    """One live line on a terminal (``\\r``), one line per run otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.passed = 0
        self.failed = 0
        self.live = sys.stderr.isatty()

    def __call__(
        self, done: int, total: int, outcome: runner.RunOutcome | None, error: str | None
    ) -> None:
        if outcome is not None:
            if outcome.record.passed:
                self.passed += 1
            else:
                self.failed += 1
        width = 20
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        if outcome is not None:
            verdict = outcome.record.verdict
            reasons = "; ".join(outcome.record.reasons)
            detail = f"run {outcome.evidence_run} {verdict} in {outcome.elapsed_s:.1f}s"
            if reasons:
                detail += f" ({reasons})"
        else:
            detail = f"error: {error}"
        line = (
            f"[{bar}] {done}/{total} {self.name}: pass {self.passed} fail {self.failed} | {detail}"
        )
        if self.live:
            end = "\n" if done == total or outcome is None else ""
            sys.stderr.write("\r\x1b[2K" + line + end)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


async def run_prompt(args: argparse.Namespace) -> int:
    if args.times < 1:
        raise CommandError("--times must be at least 1")
    path = find_prompt(args.dir, args.name)
    try:
        doc = document.load(path)
    except document.PromptFormatError as exc:
        raise CommandError(str(exc)) from None
    progress = ProgressLine(doc.header.name)
    # An agent prompt naming its CLI (fake-claude for C01) gets it in a private executor.
    async with connect.executor_client(args, rerun.executor_env(doc)) as client:
        try:
            outcomes = await runner.run_many(client, path, args.times, progress)
        except runner.RunError as exc:
            raise CommandError(str(exc)) from None
        except RpcError as exc:
            raise CommandError(f"the executor refused: {exc.message}") from None
        final = document.load(path)
    m = final.metrics
    print(
        f"{final.header.name}: {progress.passed} passed, {progress.failed} failed in this "
        f"session; now {m.success}:{m.failure} (ratio {m.ratio}, {m.status})"
    )
    return 0 if all(o.record.passed for o in outcomes) else 1


def restart_prompt(directory: Path, name: str, reason: str) -> int:
    path = find_prompt(directory, name)
    if not reason.strip():
        raise CommandError("--reason must say why")
    fd = files.lock_directory(path.parent)
    try:
        doc = document.load(path)
        done = restart.restart(doc, reason.strip())
    except (document.PromptFormatError, evidence.EvidenceError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        files.unlock_directory(fd)
    print(
        f"{done.header.name}: counts restarted at version {done.header.version} "
        f"(was version {doc.header.version}, {doc.metrics.success}:{doc.metrics.failure}); "
        f"commit {path} and {evidence.directory_of(directory) / done.header.name}"
    )
    return 0


def _print_audit(result: audit.PromptAudit) -> None:
    if result.ok:
        m = result.metrics
        counts = f"{m.success}:{m.failure} {m.status}" if m else ""
        print(
            f"ok    {result.name}: {counts}; {result.records} records, "
            f"{result.rechecked} counted successes re-judged from their evidence"
        )
    else:
        print(f"FAIL  {result.name}: {len(result.problems)} discrepancies")
        for problem in result.problems:
            print(f"      - {problem.message}")


def _print_rerun(done: rerun.Rerun) -> None:
    verdict = "pass" if done.passed else "FAIL"
    why = f" ({'; '.join(done.reasons)})" if done.reasons else ""
    print(
        f"rerun {done.prompt} run {done.original_run}: {verdict} in {done.elapsed_s:.1f}s "
        f"as execution {done.execution_id}{why}",
        flush=True,
    )


async def audit_prompts(args: argparse.Namespace) -> int:
    """The repository alone by default; a store only with ``--url``/``--data-dir``."""
    if not args.dir.is_dir():
        raise CommandError(f"no prompts directory at {args.dir}")
    if args.rerun < 0:
        raise CommandError("--rerun must be at least 0")
    results = await asyncio.to_thread(audit.audit_directory, args.dir)
    if args.names:
        wanted = {name.lower() for name in args.names}
        results = [r for r in results if r.name.lower() in wanted]
        missing = wanted - {r.name.lower() for r in results}
        if missing:
            raise CommandError(f"no prompt {', '.join(sorted(missing))} in {args.dir}")
    if args.url or args.data_dir is not None:
        async with connect.record_source(args) as source:
            try:
                for result in results:
                    await crosscheck.crosscheck(result, source)
                everything = await source.records(None)
            except SourceError as exc:
                raise CommandError(str(exc)) from None
        known = {result.name for result in results}
        unfiled = Counter(r.prompt for r in everything if r.prompt not in known)
        for name, count in sorted(unfiled.items()):
            print(f"note  {name}: {count} records in the store, no prompt file audited")
    problems = 0
    for result in results:
        _print_audit(result)
        problems += len(result.problems)
    print(f"audit: {len(results)} prompts, {problems} discrepancies", flush=True)
    failed_reruns = 0
    if args.rerun:
        try:
            done = await rerun.rerun(results, args.rerun, _print_rerun, connect.token(args))
        except ExecutorStartError as exc:
            raise CommandError(str(exc)) from None
        failed_reruns = sum(1 for d in done if not d.passed)
        print(f"rerun: {len(done)} runs re-executed, {failed_reruns} failed")
    return 1 if problems or failed_reruns else 0


def report_prompts(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise CommandError(f"no prompts directory at {args.dir}")
    base = args.output.parent if args.output else Path.cwd()
    text = report.render(args.dir, base)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


async def _run_async(args: argparse.Namespace) -> int:
    if args.prompts_command == "run":
        return await run_prompt(args)
    return await audit_prompts(args)
