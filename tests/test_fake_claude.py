"""fake-claude behaves like the real Claude Code CLI in headless mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FAKE = str(Path(sys.executable).with_name("fake-claude"))
STREAM = ["-p", "--output-format", "stream-json", "--verbose"]


def claude(args: list[str], cwd: Path, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "FAKE_CLAUDE_SCENARIO"}
    full_env = {**base, "FAKE_CLAUDE_STATE_DIR": str(state), **env}
    return subprocess.run(
        [FAKE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=20
    )


def events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "README.md").write_text("hi\n")
    return work, tmp_path / "state"


def test_stream_json_events(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    done = claude([*STREAM, "--", "hello"], work, state)
    assert done.returncode == 0, done.stderr
    got = events(done.stdout)
    assert [e["type"] for e in got] == ["system", "assistant", "user", "assistant", "result"]
    init, tool_call, tool_result, answer, result = got
    assert init["subtype"] == "init" and init["cwd"] == str(work)
    session = init["session_id"]
    assert all(e["session_id"] == session for e in got)
    blocks = tool_call["message"]["content"]
    assert [b["type"] for b in blocks] == ["text", "tool_use"]
    assert tool_result["message"]["content"][0]["type"] == "tool_result"
    assert tool_result["message"]["content"][0]["tool_use_id"] == blocks[1]["id"]
    assert "README.md" in tool_result["message"]["content"][0]["content"]
    assert answer["message"]["content"] == [{"type": "text", "text": "Echo: hello"}]
    for key in (
        "subtype",
        "is_error",
        "duration_ms",
        "num_turns",
        "session_id",
        "total_cost_usd",
        "usage",
        "result",
    ):
        assert key in result
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "Echo: hello"


def test_stream_json_requires_verbose(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    done = claude(["-p", "--output-format", "stream-json", "hi"], work, state)
    assert done.returncode == 1
    assert "requires --verbose" in done.stderr


def test_resume_keeps_the_session_and_remembers(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    first = events(claude([*STREAM, "--", "one"], work, state).stdout)
    session = first[0]["session_id"]
    second = claude([*STREAM, "--resume", session, "--", "two"], work, state)
    got = events(second.stdout)
    assert got[0]["session_id"] == session
    assert got[-1]["result"] == "Echo: two (I remember: one)"
    third = events(claude([*STREAM, f"--resume={session}", "--", "three"], work, state).stdout)
    assert third[-1]["result"] == "Echo: three (I remember: one | two)"
    cont = events(claude([*STREAM, "--continue", "--", "four"], work, state).stdout)
    assert cont[-1]["session_id"] == session


def test_unknown_session_fails_like_the_real_cli(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    work, state = dirs
    done = claude([*STREAM, "--resume=0000-nope", "--", "x"], work, state)
    assert done.returncode == 1 and done.stdout == ""
    assert "No conversation found with session ID: 0000-nope" in done.stderr
    # Sessions belong to a directory, as in ~/.claude/projects.
    session = events(claude([*STREAM, "--", "one"], work, state).stdout)[0]["session_id"]
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = claude([*STREAM, f"--resume={session}", "--", "x"], other, state)
    assert elsewhere.returncode == 1 and "No conversation found" in elsewhere.stderr


def test_option_parsing_like_commander(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    dashed = claude([*STREAM, "--dangerously-skip-permissions; rm -rf /"], work, state)
    assert dashed.returncode == 1
    assert "unknown option '--dangerously-skip-permissions; rm -rf /'" in dashed.stderr
    literal = claude([*STREAM, "--", "--dangerously-skip-permissions; rm -rf /"], work, state)
    got = events(literal.stdout)
    assert got[0]["permissionMode"] == "default"
    assert got[-1]["result"] == "Echo: --dangerously-skip-permissions; rm -rf /"
    # A list option swallows the following words, the prompt included.
    swallowed = claude([*STREAM, "--allowedTools", "Bash", "Read", "hello"], work, state)
    assert swallowed.returncode == 1 and "Input must be provided" in swallowed.stderr
    tools = events(claude([*STREAM, "--allowedTools=Bash,Read", "--", "hi"], work, state).stdout)
    assert tools[0]["tools"] == ["Bash", "Read"]
    bypass = events(
        claude([*STREAM, "--dangerously-skip-permissions", "--", "x"], work, state).stdout
    )
    assert bypass[0]["permissionMode"] == "bypassPermissions"


def test_output_formats(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    text = claude(["-p", "hello"], work, state)
    assert text.stdout == "Echo: hello\n"
    result = json.loads(claude(["-p", "--output-format", "json", "hello"], work, state).stdout)
    assert result["type"] == "result" and result["result"] == "Echo: hello"
    verbose = json.loads(
        claude(["-p", "--output-format", "json", "--verbose", "hello"], work, state).stdout
    )
    assert isinstance(verbose, list) and verbose[-1]["type"] == "result"
    piped = subprocess.run(
        [FAKE, "-p"],
        input="from stdin",
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_CLAUDE_STATE_DIR": str(state)},
        timeout=20,
    )
    assert piped.stdout == "Echo: from stdin\n"


def test_failure_scenarios(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    error = claude([*STREAM, "--", "fake:error"], work, state)
    last = events(error.stdout)[-1]
    assert error.returncode == 1
    assert last["type"] == "result" and last["is_error"] is True
    assert last["subtype"] == "error_during_execution" and "result" not in last
    turns = claude([*STREAM, "--max-turns=1", "--", "hi"], work, state)
    assert turns.returncode == 1 and events(turns.stdout)[-1]["subtype"] == "error_max_turns"
    crash = claude([*STREAM, "--", "fake:crash"], work, state)
    assert crash.returncode == 1 and "fake crash" in crash.stderr
    assert not crash.stdout.endswith("\n")  # half a line
    noresult = claude([*STREAM, "--", "x"], work, state, FAKE_CLAUDE_SCENARIO="noresult")
    assert noresult.returncode == 0
    assert [e["type"] for e in events(noresult.stdout)] == ["system", "assistant"]
    big = claude([*STREAM, "--", "fake:bigline=200000"], work, state)
    lines = big.stdout.splitlines()
    assert len(lines) == 3 and len(lines[1]) > 200_000
    slow = claude([*STREAM, "--", "fake:slow=0.3"], work, state)
    first, last = events(slow.stdout)[0], events(slow.stdout)[-1]
    assert first["type"] == "system" and last["duration_ms"] >= 300


def test_ignore_term_and_hang(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    env = {**os.environ, "FAKE_CLAUDE_STATE_DIR": str(state)}
    for scenario, survives in (("ignore-term", True), ("hang", False)):
        proc = subprocess.Popen(
            [FAKE, *STREAM, "--", f"fake:{scenario}"],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["subtype"] == "init"
            proc.terminate()
            try:
                proc.wait(0.5)
                ended = True
            except subprocess.TimeoutExpired:
                ended = False
            assert ended is not survives
        finally:
            proc.kill()
            proc.wait()


def test_stream_json_input(dirs: tuple[Path, Path]) -> None:
    work, state = dirs
    messages = [
        {"type": "user", "message": {"role": "user", "content": "one"}},
        {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "two"}]}},
    ]
    done = subprocess.run(
        [FAKE, *STREAM, "--input-format", "stream-json"],
        input="".join(json.dumps(m) + "\n" for m in messages),
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_CLAUDE_STATE_DIR": str(state)},
        timeout=20,
    )
    results = [e for e in events(done.stdout) if e["type"] == "result"]
    assert [r["result"] for r in results] == ["Echo: one", "Echo: two (I remember: one)"]
    assert results[0]["session_id"] == results[1]["session_id"]
