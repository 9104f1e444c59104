"""``cc-executor prompts``: list, new, run, audit, report.

Records live in the executor's store (namespace ``prompts``) and only the
server writes them, after judging a run from its own stored transcript.
Where the commands find them:

- ``run``: through ``--url`` (with ``--token``); without it, through the
  server configured by the settings (``CC_EXECUTOR_HOST``/``PORT``) when one
  answers, else through a private executor started on a free loopback port
  with the data directory (``--data-dir`` always starts a private one).
- ``audit`` and ``report``: through ``--url`` when given, else the store file
  in the data directory, opened read-only.
- ``list`` and ``new`` read and write prompt files only.

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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from service.client import ConnectionLost, ExecutorClient
from service.errors import RpcError
from service.prompts import audit, document, report, runner
from service.prompts.executor import ExecutorStartError, LocalExecutor
from service.prompts.ledger import day
from service.prompts.source import FileSource, RecordSource, ServerSource, SourceError


class CommandError(Exception):
    """Bad usage or an unusable prompt file: printed, exit 2."""


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

    audit_parser = actions.add_parser("audit", help="check every table against the records")
    server_options(audit_parser)

    report_parser = actions.add_parser("report", help="a Markdown graduation review")
    report_parser.add_argument("--output", type=Path, help="write it here instead of stdout")
    server_options(report_parser)


def run(args: argparse.Namespace) -> int:
    try:
        if args.prompts_command == "list":
            return list_prompts(args.dir)
        if args.prompts_command == "new":
            return new_prompt(args.dir, args.name)
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


# --- connecting ----------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        raise CommandError(f"invalid settings:\n{exc}") from None


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return Path(_settings(args).data_dir)


def _token(args: argparse.Namespace) -> str | None:
    """``--token``, else the settings' token (``CC_EXECUTOR_TOKEN`` or ``_TOKEN_FILE``)."""
    if args.token:
        return str(args.token)
    try:
        token: str | None = _settings(args).resolved_token()
    except OSError as exc:
        raise CommandError(f"cannot read the token file: {exc}") from None
    return token


def live_executions(data_dir: Path) -> int:
    """Executions the store in ``data_dir`` marks live (read-only; 0 when none or no store)."""
    import sqlite3

    from service.store.database import DB_NAME

    path = data_dir / DB_NAME
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            row = conn.execute(
                "SELECT count(*) FROM executions WHERE state IN ('starting', 'running', 'paused')"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # no executions table yet, or a damaged file the server will move aside
    return int(row[0])


@contextlib.asynccontextmanager
async def executor_client(args: argparse.Namespace) -> AsyncIterator[ExecutorClient]:
    """A connected client: ``--url``, else the configured server if it answers,
    else a private executor (stopped on exit)."""
    if args.url:
        urls = [args.url]
    elif args.data_dir is None:
        settings = _settings(args)
        urls = [f"ws://{settings.host}:{settings.port}/ws/mcp"]
    else:
        urls = []
    for url in urls:
        client = ExecutorClient(url, _token(args), open_timeout_s=10.0, max_frame_bytes=None)
        try:
            await client.connect()
        except OSError as exc:
            if args.url:
                raise CommandError(f"cannot connect to {url}: {exc}") from None
            continue  # nothing listens there: start a private executor below
        except (ConnectionLost, TimeoutError, websockets.InvalidHandshake) as exc:
            # Something answers but refuses us (a token, an Origin): never start a
            # second server beside it on what may be the same data directory.
            raise CommandError(f"the executor at {url} refused the connection: {exc}") from None
        try:
            yield client
        finally:
            await client.close()
        return
    data_dir = _data_dir(args)
    live = await asyncio.to_thread(live_executions, data_dir)
    if live:
        raise CommandError(
            f"the store in {data_dir} has {live} live executions: a server is using it. "
            "Pass its --url, or another --data-dir (a second server would treat them as "
            "leftovers of a crash and end them)"
        )
    local = LocalExecutor(data_dir)
    try:
        url = await asyncio.to_thread(local.start)
    except ExecutorStartError as exc:
        raise CommandError(str(exc)) from None
    print(f"started a private executor at {url} (data dir {local.data_dir})", file=sys.stderr)
    try:
        async with ExecutorClient(url, _token(args), max_frame_bytes=None) as client:
            yield client
    finally:
        await asyncio.to_thread(local.stop)


@contextlib.asynccontextmanager
async def record_source(args: argparse.Namespace) -> AsyncIterator[RecordSource]:
    if args.url:
        async with executor_client(args) as client:
            yield ServerSource(client)
        return
    from service.store.database import DB_NAME

    yield FileSource(_data_dir(args) / DB_NAME)


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
            detail = f"run {outcome.record.id} {verdict} in {outcome.elapsed_s:.1f}s"
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
    async with executor_client(args) as client:
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


async def audit_prompts(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise CommandError(f"no prompts directory at {args.dir}")
    async with record_source(args) as source:
        try:
            results = await audit.audit_directory(args.dir, source)
            everything = await source.records(None)
        except SourceError as exc:
            raise CommandError(str(exc)) from None
    known = {result.name for result in results}
    unfiled = Counter(record.prompt for record in everything if record.prompt not in known)
    for name, count in sorted(unfiled.items()):
        print(f"note  {name}: {count} records in the store, no prompt file in {args.dir}")
    problems = 0
    for result in results:
        if result.ok:
            m = result.metrics
            counts = f"{m.success}:{m.failure} {m.status}" if m else ""
            print(
                f"ok    {result.name}: {counts}; {result.records} records, "
                f"{result.rechecked} counted successes re-checked against their transcripts"
            )
        else:
            print(f"FAIL  {result.name}: {len(result.problems)} discrepancies")
            for problem in result.problems:
                print(f"      - {problem.message}")
            problems += len(result.problems)
    print(f"audit: {len(results)} prompts, {problems} discrepancies")
    return 1 if problems else 0


async def report_prompts(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise CommandError(f"no prompts directory at {args.dir}")
    async with record_source(args) as source:
        try:
            text = await report.render(args.dir, source)
        except SourceError as exc:
            raise CommandError(str(exc)) from None
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


async def _run_async(args: argparse.Namespace) -> int:
    if args.prompts_command == "run":
        return await run_prompt(args)
    if args.prompts_command == "audit":
        return await audit_prompts(args)
    return await report_prompts(args)
