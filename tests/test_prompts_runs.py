"""Prompt runs through a real server: verdicts from the stored transcript,
graduation and reset, the audit, and concurrent runs counting exactly."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service import errors
from service.client import ExecutorClient
from service.process import procfs
from service.prompts import audit, crosscheck, document, runner
from service.prompts.source import ServerSource
from service.store.database import DB_NAME
from tests.utils import RunningServer

REPO = Path(__file__).resolve().parents[1]
FAKE_CLAUDE = str(REPO / ".venv" / "bin" / "fake-claude")

PROMPT = """# {name}

## Header

```toml
name = "{name}"
version = 1
command = {command}
timeout_s = {timeout}
expect = {expect}
```

## Prompt

A test prompt.

## Gamification Metrics

| Success | Failure | Total | Ratio | Last Updated | Status |
| --- | --- | --- | --- | --- | --- |
| 0 | 0 | 0 | 0:0 | never | active |

## Evolution History

| Version | Date | Change and reason | Result |
| --- | --- | --- | --- |
| 1 | 2026-01-01 | Created | no runs yet |

## Recovery Tests

1. One.
2. Two.
3. Three.
"""

GOOD = '["{python}", "-c", "import sys; print(\'checked: ok\'); print(sys.argv[1])", "{marker}"]'


def unique(name: str) -> str:
    """Prompt names are unique per test: the per-worker server keeps every record."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def write_prompt(
    directory: Path,
    name: str,
    command: str = GOOD,
    expect: str = '["checked: ok"]',
    timeout: float = 30,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    text = PROMPT.replace("{name}", name).replace("{command}", command)
    text = text.replace("{timeout}", str(timeout)).replace("{expect}", expect)
    path.write_text(text)
    return path


def wait_no_marked_env(entry: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := procfs.pids_with_env(entry.encode())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run_times(url: str, path: Path, times: int, env: dict[str, str]) -> list[runner.RunOutcome]:
    async def main() -> list[runner.RunOutcome]:
        outcomes = []
        async with ExecutorClient(url) as client:
            for _ in range(times):
                doc = document.load(path)
                outcome = await runner.run_once(client, doc, extra_env=env)
                outcomes.append(outcome)
                await runner.sync_file(client, path, outcome)
        return outcomes

    return asyncio.run(main())


def audit_dir(url: str, directory: Path) -> list[audit.PromptAudit]:
    """The evidence audit plus the cross-check against the server's store."""

    async def main() -> list[audit.PromptAudit]:
        results = audit.audit_directory(directory)
        async with ExecutorClient(url) as client:
            for result in results:
                await crosscheck.crosscheck(result, ServerSource(client))
        return results

    return asyncio.run(main())


def cli(*words: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", "prompts", *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_a_run_that_passes(server: RunningServer, marker: dict[str, str], tmp_path: Path) -> None:
    path = write_prompt(tmp_path / "prompts", unique("good"))
    (outcome,) = run_times(server.url, path, 1, marker)
    assert outcome.record.verdict == "pass", outcome.record.reasons
    assert outcome.record.marker in outcome.record.argv
    assert len(outcome.record.transcript_sha256) == 64
    doc = document.load(path)
    assert (doc.metrics.success, doc.metrics.failure, doc.metrics.status) == (1, 0, "active")
    assert doc.history[0].result == "1 pass, 0 fail"
    assert all(result.ok for result in audit_dir(server.url, path.parent))


@pytest.mark.parametrize(
    ("command", "expect", "timeout", "reason"),
    [
        # Exits 0 and "claims" success, but never prints its marker: the hallucination case.
        (
            '["{python}", "-c", "print(\'checked: ok, all done\')", "{marker}"]',
            '["checked: ok"]',
            30,
            "marker missing from the stored transcript",
        ),
        (GOOD, '["checked: ok", "coverage: 100%"]', 30, "expected pattern not found: coverage"),
        (
            '["{python}", "-c", "import time; time.sleep(60)", "{marker}"]',
            "[]",
            1,
            "timed out after 1 s",
        ),
        (
            '["{python}", "-c", "import sys; print(sys.argv[1]); sys.exit(4)", "{marker}"]',
            "[]",
            30,
            "ended failed with exit code 4",
        ),
    ],
    ids=["no-marker", "missing-pattern", "timeout", "exit-code"],
)
def test_runs_that_fail_are_counted_as_failures(
    server: RunningServer,
    marker: dict[str, str],
    tmp_path: Path,
    command: str,
    expect: str,
    timeout: float,
    reason: str,
) -> None:
    path = write_prompt(tmp_path / "prompts", unique("bad"), command, expect, timeout)
    (outcome,) = run_times(server.url, path, 1, marker)
    assert outcome.record.verdict == "fail"
    assert any(r.startswith(reason) for r in outcome.record.reasons), outcome.record.reasons
    doc = document.load(path)
    assert (doc.metrics.success, doc.metrics.failure, doc.metrics.total) == (0, 1, 1)
    assert all(result.ok for result in audit_dir(server.url, path.parent))


def test_graduation_then_reset_then_hand_edit_caught(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    flag = tmp_path / "FAIL"
    command = (
        '["{python}", "-c", "import os, sys; os.path.exists(sys.argv[1]) and sys.exit(3); '
        f'print(\'checked: ok\', sys.argv[2])", "{flag}", "{{marker}}"]'
    )
    path = write_prompt(directory, unique("grad"), command)
    run_times(server.url, path, 10, marker)
    doc = document.load(path)
    assert (doc.metrics.success, doc.metrics.failure, doc.metrics.status) == (10, 0, "graduated")
    assert doc.metrics.ratio == "10:0"
    assert [row.change.split(":")[0] for row in doc.history if row.generated] == [
        "Graduated at run " + doc.history[-1].change.split("run ")[1].split(":")[0]
    ]

    # A hand edit: more successes than any record backs.
    text = path.read_text()
    path.write_text(text.replace("| 10 | 0 | 10 | 10:0 |", "| 14 | 0 | 14 | 14:0 |"))
    (result,) = audit_dir(server.url, directory)
    assert not result.ok
    assert "table says Success 14, the records give 10" in [p.message for p in result.problems]
    # The repository alone catches it too.
    (alone,) = audit.audit_directory(directory)
    assert [p.message for p in alone.problems] == [p.message for p in result.problems]
    # A forged graduation row is caught too.
    path.write_text(text + "")
    forged = text.replace(
        "| 1 | 2026-01-01 | Created |",
        "| 1 | 2026-01-01 | Graduated early: trust me | graduated |\n| 1 | 2026-01-01 | Created |",
    )
    path.write_text(forged)
    (result,) = audit_dir(server.url, directory)
    assert any("graduation/reset rows" in p.message for p in result.problems)
    path.write_text(text)

    # A failure after graduation resets to 0:0, with a row saying why.
    flag.touch()
    (outcome,) = run_times(server.url, path, 1, marker)
    assert outcome.record.verdict == "fail"
    doc = document.load(path)
    assert (doc.metrics.success, doc.metrics.failure, doc.metrics.status) == (0, 0, "reset")
    reset = [row for row in doc.history if row.change.startswith("Reset")]
    assert len(reset) == 1 and "ended failed with exit code 3" in reset[0].change
    assert all(result.ok for result in audit_dir(server.url, directory))


def test_a_verdict_cannot_be_claimed_and_a_run_counts_once(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    name = unique("once")
    path = write_prompt(tmp_path / "prompts", name)

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            outcome = await runner.run_once(client, document.load(path), extra_env=marker)
            claim = {
                "prompt": name,
                "version": 1,
                "execution_id": outcome.execution_id,
                "marker": outcome.record.marker,
            }
            with pytest.raises(errors.InvalidParams):
                await client.call("prompts.record", {**claim, "verdict": "pass"})
            with pytest.raises(errors.InvalidState, match="already recorded"):
                await client.call("prompts.record", claim)
            # Someone else's execution with a made-up marker: judged, and it fails.
            echo = await client.run(argv=["echo", "PROMPT-MARKER-forged-0123456789"], env=marker)
            forged = await client.call(
                "prompts.record",
                {**claim, "execution_id": echo.execution_id, "marker": "0123456789abcdef"},
            )
            assert forged["verdict"] == "fail"
            assert "marker was not passed to the command" in forged["reasons"]
            with pytest.raises(errors.NotFound):
                await client.call("prompts.record", {**claim, "execution_id": "nope"})
            # A run is judged once it has ended, never while it runs.
            sleeper = await client.execute(argv=["sleep", "30"], env=marker)
            with pytest.raises(errors.InvalidState, match="still running"):
                await client.call("prompts.record", {**claim, "execution_id": sleeper.id})
            await sleeper.cancel()
            await sleeper.wait(15)

    asyncio.run(main())


def test_concurrent_runs_on_one_prompt_count_exactly(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    name = unique("busy")
    path = write_prompt(directory, name)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    procs = [
        cli("--dir", str(directory), "run", name, "--times", "6", "--url", server.url, env=env)
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert f"6/6 {name}" in err  # the progress line
    doc = document.load(path)
    assert (doc.metrics.success, doc.metrics.failure, doc.metrics.total) == (18, 0, 18)
    assert doc.metrics.status == "graduated"
    (result,) = audit_dir(server.url, directory)
    assert result.ok and result.records == 18 and result.rechecked == 18
    # The CLI marks every run's process with PROMPT_NAME: none may be left.
    assert wait_no_marked_env(f"PROMPT_NAME={name}") == []


def test_cli_list_new_report_and_audit_exit_codes(server: RunningServer, tmp_path: Path) -> None:
    directory = tmp_path / "prompts"
    name = unique("fresh")
    new = cli("--dir", str(directory), "new", name)
    assert new.wait(30) == 0
    assert (directory / f"{name}.md").exists()
    dup = cli("--dir", str(directory), "new", name)
    assert dup.wait(30) == 2 and "already exists" in (dup.stderr.read() if dup.stderr else "")
    listing = cli("--dir", str(directory), "list")
    out, _ = listing.communicate(timeout=30)
    assert listing.returncode == 0
    assert out.splitlines()[1].split()[:7] == [name, "1", "0", "0", "0", "0:0", "active"]
    report = cli("--dir", str(directory), "report")
    out, err = report.communicate(timeout=30)
    assert report.returncode == 0, err
    assert f"## {name} (version 1)" in out and "**keep**: 10 more successes" in out
    review = tmp_path / "review.md"
    review.write_text(out)
    lint = subprocess.run(
        [str(REPO / "node_modules" / ".bin" / "markdownlint-cli2"), str(review)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    path = directory / f"{name}.md"
    path.write_text(path.read_text().replace("| 0 | 0 | 0 | 0:0 |", "| 3 | 0 | 3 | 3:0 |"))
    bad = cli("--dir", str(directory), "audit", "--url", server.url)
    out, _ = bad.communicate(timeout=30)
    assert bad.returncode == 1
    assert "table says Success 3, the records give 0" in out


def test_agent_prompt_runs_through_fake_claude(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    directory = repo / "prompts"
    directory.mkdir(parents=True)
    text = (REPO / "prompts" / "C01-agent-review.md").read_text()
    (directory / "C01.md").write_text(text)
    running = make_server(
        {"claude_bin": FAKE_CLAUDE, "project_roots": [str(tmp_path)]},
    )
    (outcome,) = run_times(running.url, directory / "C01.md", 1, marker)
    assert outcome.record.verdict == "pass", outcome.record.reasons
    assert outcome.record.argv[0] == FAKE_CLAUDE
    # An agent that errors: the run fails on its result, whatever it printed.
    # A changed prompt is a new version (the evidence refuses a changed header otherwise).
    version = document.load(directory / "C01.md").header.version
    changed = text.replace("Do not change any file.", "fake:error").replace(
        f"version = {version}", f"version = {version + 1}"
    )
    (directory / "C01.md").write_text(changed)
    (outcome,) = run_times(running.url, directory / "C01.md", 1, marker)
    assert outcome.record.verdict == "fail"
    doc = document.load(directory / "C01.md")
    assert (doc.metrics.success, doc.metrics.failure) == (1, 1)


def test_a_record_forged_in_the_database_is_caught_by_the_audit(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    command = '["{python}", "-c", "print(\'checked: ok\'); import sys; sys.exit(2)", "{marker}"]'
    path = write_prompt(tmp_path / "prompts", unique("forged"), command)
    (outcome,) = run_times(server.url, path, 1, marker)
    assert outcome.record.verdict == "fail"
    # Someone with write access to the store turns the failure into a success.
    conn = sqlite3.connect(server.data_dir / DB_NAME, timeout=30)
    with conn:
        conn.execute(
            "UPDATE prompt_runs SET verdict = 'pass', reasons = '[]', exit_code = 0, "
            "state = 'completed' WHERE execution_id = ?",
            (outcome.execution_id,),
        )
    conn.close()

    # The evidence still holds the failure: the store and the evidence disagree.
    (result,) = audit_dir(server.url, path.parent)
    messages = [p.message for p in result.problems]
    assert any("the store says verdict 'pass', evidence run 1 'fail'" in m for m in messages)
    assert any("the store says status 'completed', evidence run 1 'failed'" in m for m in messages)
    (alone,) = audit.audit_directory(path.parent)
    assert alone.ok  # the repository alone cannot see the store, by design


def test_audit_data_dir_reads_the_store_through_a_private_executor(tmp_path: Path) -> None:
    """``--data-dir`` reads the store only through the wire: a private executor
    on that directory, started and stopped by the audit."""
    data, directory = tmp_path / "data", tmp_path / "prompts"
    path = write_prompt(directory, unique("dd"))
    env = {**os.environ, "CC_EXECUTOR_DATA_DIR": str(tmp_path / "unused")}
    ran = cli("--dir", str(directory), "run", path.stem, "--data-dir", str(data), env=env)
    out, err = ran.communicate(timeout=120)
    assert ran.returncode == 0, out + err
    audited = cli("--dir", str(directory), "audit", "--data-dir", str(data), env=env)
    out, err = audited.communicate(timeout=120)
    assert audited.returncode == 0, out + err
    assert f"ok    {path.stem}: 1:0 active; 1 records, 1 counted successes re-judged" in out
    assert "started a private executor" in err
    assert not (tmp_path / "unused").exists()

    # The store's exit code is read too (``status``): a forged one is caught.
    conn = sqlite3.connect(data / DB_NAME, timeout=30)
    with conn:
        (execution_id,) = conn.execute("SELECT execution_id FROM prompt_runs").fetchone()
        conn.execute("UPDATE executions SET exit_code = 7 WHERE id = ?", (execution_id,))
    conn.close()
    audited = cli("--dir", str(directory), "audit", "--data-dir", str(data), env=env)
    out, err = audited.communicate(timeout=120)
    assert audited.returncode == 1, out + err
    assert "the store says exit code 7, the record 0" in out


def test_audit_data_dir_refuses_a_directory_a_server_holds_or_none(
    server: RunningServer, tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    write_prompt(directory, unique("held"))
    audited = cli("--dir", str(directory), "audit", "--data-dir", str(server.data_dir))
    out, err = audited.communicate(timeout=120)
    assert audited.returncode == 2, out + err
    (line,) = err.strip().splitlines()[-1:]
    assert "is in use by another cc-executor" in line and "pass --url" in line, err
    missing = tmp_path / "never"
    audited = cli("--dir", str(directory), "audit", "--data-dir", str(missing))
    out, err = audited.communicate(timeout=60)
    assert audited.returncode == 2, out + err
    assert f"no data directory at {missing}" in err
    assert not missing.exists()
