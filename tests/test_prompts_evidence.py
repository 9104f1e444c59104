"""Prompt evidence in the repository: runs exported by a real server, the audit
from the evidence alone catching each kind of tampering, restart, the report,
and the client patterns' time bound."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service import errors
from service.client import ExecutorClient
from service.prompts import audit, crosscheck, document, evidence, restart, runner, verdict
from service.prompts.source import ServerSource
from tests.test_prompts_runs import run_times, unique, write_prompt
from tests.utils import RunningServer

REPO = Path(__file__).resolve().parents[1]


def messages(directory: Path) -> list[str]:
    return [str(p) for result in audit.audit_directory(directory) for p in result.problems]


def rewrite_json(path: Path, change: dict[str, object]) -> None:
    """Change a record and re-hash it in the manifest: a forger with write access."""
    data = json.loads(path.read_text())
    data.update(change)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    where = path.parents[3] if path.parent.name == "runs" else path.parents[2]
    evidence.add_to_manifest(where, [path.relative_to(where).as_posix()])


def test_a_run_is_exported_as_evidence_and_audited_alone(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    name = unique("ev")
    path = write_prompt(directory, name)
    (outcome,) = run_times(server.url, path, 1, marker)
    where = evidence.directory_of(directory)
    record = json.loads((where / name / "runs" / "000001.json").read_text())
    assert record["verdict"] == "pass" and record["execution_id"] == outcome.execution_id
    assert record["transcript_sha256"] == outcome.record.transcript_sha256
    assert record["placeholders"]["python"] == sys.executable
    transcript = gzip.decompress((where / record["evidence"]["file"]).read_bytes()).decode()
    assert outcome.record.marker in transcript and "checked: ok" in transcript
    listed = evidence.read_manifest(where)
    assert set(listed) == {
        f"{name}/runs/000001.json",
        f"{name}/versions/1.json",
        record["evidence"]["file"],
    }
    assert document.load(path).metrics.success == 1
    assert messages(directory) == []


def test_each_kind_of_tampering_is_named(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    name = unique("tamper")
    flag = tmp_path / "FAIL"
    command = (
        '["{python}", "-c", "import os, sys; os.path.exists(sys.argv[1]) and sys.exit(3); '
        f'print(\'checked: ok\', sys.argv[2])", "{flag}", "{{marker}}"]'
    )
    path = write_prompt(directory, name, command)
    run_times(server.url, path, 2, marker)
    flag.touch()
    run_times(server.url, path, 1, marker)  # run 3 fails: exit 3
    assert messages(directory) == []
    where = evidence.directory_of(directory)
    runs = where / name / "runs"
    pristine = {p: p.read_bytes() for p in where.rglob("*") if p.is_file()}

    def restore() -> None:
        for p in where.rglob("*"):
            if p.is_file() and p not in pristine:
                p.unlink()
        for p, data in pristine.items():
            p.write_bytes(data)
        assert messages(directory) == []

    # A failure turned into a success (and re-hashed): it does not re-judge as one.
    rewrite_json(runs / "000003.json", {"verdict": "pass", "reasons": []})
    found = messages(directory)
    assert any(f"{name}: run 3" in m and "ended failed with exit code 3" in m for m in found)
    restore()
    # A record without its transcript.
    first = json.loads((runs / "000001.json").read_text())
    (where / first["evidence"]["file"]).unlink()
    found = messages(directory)
    assert any(f"{name}: run 1" in m and "is missing" in m for m in found), found
    restore()
    # Another transcript put in its place, the manifest updated to match.
    other = where / first["evidence"]["file"]
    other.write_bytes(gzip.compress(b"checked: ok " + first["marker"].encode(), mtime=0))
    evidence.add_to_manifest(where, [first["evidence"]["file"]])
    found = messages(directory)
    assert any("does not hash to its record's" in m for m in found), found
    restore()
    # A run of another command.
    rewrite_json(
        runs / "000002.json",
        {"argv": ["echo", json.loads((runs / "000002.json").read_text())["marker"]]},
    )
    found = messages(directory)
    assert any(f"{name}: run 2" in m and "not version 1's command" in m for m in found), found
    restore()
    # A record deleted: the numbering and the manifest both say so.
    (runs / "000002.json").unlink()
    found = messages(directory)
    assert any("is in the manifest but missing" in m for m in found), found
    restore()
    # A header changed without a new version.
    text = path.read_text()
    path.write_text(text.replace('expect = ["checked: ok"]', 'expect = ["checked"]'))
    found = messages(directory)
    assert any("header changed since its runs were recorded" in m for m in found), found
    path.write_text(text)


def test_restart_counts_from_a_new_version(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    path = write_prompt(directory, unique("restart"))
    run_times(server.url, path, 2, marker)
    done = restart.restart(document.load(path))
    assert done.header.version == 2
    assert (done.metrics.success, done.metrics.failure, done.metrics.status) == (0, 0, "active")
    rows = {row.version: row for row in done.history}
    assert rows[1].result == "2 pass, 0 fail"  # history without counts, kept
    assert rows[2].change.startswith("Counts restarted: earlier records were not kept")
    assert messages(directory) == []
    run_times(server.url, path, 1, marker)
    doc = document.load(path)
    assert (doc.metrics.success, doc.metrics.total) == (1, 1)
    assert [row.result for row in doc.history] == ["2 pass, 0 fail", "1 pass, 0 fail"]
    assert messages(directory) == []
    # The version before the restart cannot be run again.
    path.write_text(path.read_text().replace("version = 2", "version = 1"))
    with pytest.raises(runner.RunError, match="counts restarted at version 2"):
        run_times(server.url, path, 1, marker)


def test_a_long_transcript_is_capped_and_says_so() -> None:
    text = "x" * 100_000 + "\nthe end MARKER\n"
    kept, cut = evidence.keep(text)
    assert cut and len(kept.encode()) < evidence.TRANSCRIPT_CAP_BYTES + 100
    assert kept.startswith("x" * 1000) and kept.endswith("the end MARKER\n")
    assert "bytes not kept as evidence" in kept
    assert evidence.keep("short") == ("short", False)


# --- client patterns: bounded in time ---------------------------------------------

PATHOLOGICAL = r"(a|aa)+$"  # exponential backtracking on "aaaa...a!"


def test_a_pathological_pattern_runs_out_of_time_and_is_named() -> None:
    started = time.monotonic()
    # Unbounded, this search would take hours (about 1.6**60 steps).
    with pytest.raises(verdict.PatternTimeout, match=r"ran past the 0.5 s budget"):
        verdict.missing_patterns([PATHOLOGICAL], "a" * 60 + "!", budget_s=0.5)
    assert time.monotonic() - started < 30  # generous: the machine may be loaded
    assert verdict.missing_patterns(["a+!", "zzz"], "a" * 40 + "!") == ["zzz"]
    with pytest.raises(verdict.PatternError, match="is invalid"):
        verdict.compile_pattern("(unclosed")


def test_prompts_record_refuses_a_pattern_that_runs_too_long(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client, ExecutorClient(server.url) as other:
            done = await client.run(argv=["printf", "%s!\\n", "a" * 60], env=marker)
            claim = {
                "prompt": unique("regex"),
                "version": 1,
                "execution_id": done.execution_id,
                "marker": "PROMPT-MARKER-regex-0123456789",
                "patterns": [PATHOLOGICAL],
            }
            finished: dict[str, float] = {}

            async def record() -> None:
                try:
                    await client.call("prompts.record", claim, timeout=120)
                finally:
                    finished["record"] = time.monotonic()

            judging = asyncio.ensure_future(record())
            await asyncio.sleep(0.2)
            # While the pattern runs, the server answers another client: the pattern
            # runs in a thread of its own with the GIL released (with ``re`` in a store
            # reader, the whole server froze until the search ended: hours).
            await other.call("executions.list", {})
            finished["other"] = time.monotonic()
            with pytest.raises(errors.InvalidParams, match="ran past the"):
                await judging
            assert finished["other"] < finished["record"]
            # Nothing was recorded: the same run can be judged with a sane pattern.
            stored = await client.call("prompts.record", {**claim, "patterns": ["a+!"]})
            assert stored["verdict"] == "fail"  # its marker was not passed: judged, not refused

    asyncio.run(main())


# --- the repository's own evidence, as a reviewer sees it --------------------------


def fresh_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The repository's prompts/ alone, with an empty data directory and HOME."""
    clone = tmp_path / "clone"
    shutil.copytree(
        REPO / "prompts", clone / "prompts", ignore=shutil.ignore_patterns("__pycache__")
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "CC_EXECUTOR_DATA_DIR": str(tmp_path / "data"),
    }
    return clone, env


def prompts_cli(cwd: Path, env: dict[str, str], *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "prompts", *words],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_shipped_prompts_audit_from_the_repository_alone(tmp_path: Path) -> None:
    clone, env = fresh_copy(tmp_path)
    result = prompts_cli(clone, env, "audit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "data").exists()  # no store was opened, or created
    listing = prompts_cli(clone, env, "list")
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    graduated = [row[0] for row in rows if row[6] == "graduated"]
    assert len(graduated) >= 7, listing.stdout
    report = prompts_cli(clone, env, "report", "--output", str(clone / "review.md"))
    assert report.returncode == 0, report.stderr
    lint = subprocess.run(
        [str(REPO / "node_modules" / ".bin" / "markdownlint-cli2"), str(clone / "review.md")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    review = (clone / "review.md").read_text()
    assert re.search(r"\]\(prompts/evidence/T01/runs/\d{6}\.json\)", review), review[:2000]
    assert "- Runs through: an agent, `fake-claude`" in review


def test_an_edited_count_in_the_shipped_tables_is_caught(tmp_path: Path) -> None:
    clone, env = fresh_copy(tmp_path)
    path = clone / "prompts" / "T01-logging-healthz.md"
    doc = document.load(path)
    m = doc.metrics
    edited = doc.text.replace(
        f"| {m.success} | {m.failure} | {m.total} |",
        f"| {m.success + 1} | {m.failure} | {m.total + 1} |",
    )
    assert edited != doc.text
    path.write_text(edited)
    result = prompts_cli(clone, env, "audit")
    assert result.returncode == 1
    assert f"table says Success {m.success + 1}, the records give {m.success}" in result.stdout
    assert "FAIL  T01" in result.stdout


def test_one_flipped_byte_in_any_evidence_file_is_caught(tmp_path: Path) -> None:
    clone, env = fresh_copy(tmp_path)
    directory = clone / "prompts"
    where = evidence.directory_of(directory)
    files = sorted(p for p in where.rglob("*") if p.is_file())
    assert len(files) > 8 * 3
    for file in files:
        original = file.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        file.write_bytes(bytes(flipped))
        found = messages(directory)
        file.write_bytes(original)
        name = file.relative_to(where).as_posix()
        assert found, f"a flipped byte in {name} went unnoticed"
        assert any(name in m or "MANIFEST" in name for m in found), (name, found)
    # And through the CLI: exit 1, the file named.
    victim = next(p for p in files if p.suffix == ".gz")
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x80
    victim.write_bytes(bytes(data))
    result = prompts_cli(clone, env, "audit")
    assert result.returncode == 1 and victim.name in result.stdout


def test_rerun_re_executes_recorded_runs_through_a_private_executor(tmp_path: Path) -> None:
    _, env = fresh_copy(tmp_path)
    # The checks inspect the repository itself, so they run against it; the data
    # directory and HOME stay empty, and the executor is a private one.
    result = prompts_cli(
        REPO,
        {**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        "audit",
        "--rerun",
        "1",
        "T05",
        "C01",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rerun: 2 runs re-executed, 0 failed" in result.stdout
    assert "rerun C01 run" in result.stdout and "rerun T05 run" in result.stdout
    assert not (tmp_path / "data").exists()


def test_a_store_run_missing_from_the_evidence_is_named_by_the_cross_check(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prompts"
    path = write_prompt(directory, unique("unexported"))
    run_times(server.url, path, 1, marker)

    async def main() -> list[str]:
        async with ExecutorClient(server.url) as client:
            # Recorded by the server, never exported (the tool died before it could).
            lost = await runner.run_once(client, document.load(path), extra_env=marker)
            (result,) = audit.audit_directory(directory)
            assert result.ok  # the repository alone is consistent...
            await crosscheck.crosscheck(result, ServerSource(client))
            assert lost.record.verdict == "pass"
            return [p.message for p in result.problems]

    found = asyncio.run(main())
    assert len(found) == 1 and found[0].endswith("is not in the evidence"), found
