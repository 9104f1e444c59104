"""The ``prompts`` namespace of the store: one row per verified run.

Only the server writes here: :func:`read_finished` reads the finished
execution and its transcript as the store recorded them (the ``core``
tables), :func:`judge` judges the run with
:func:`service.prompts.verdict.judge`, and :func:`insert` stores the record in
one job of the store's single writer thread. The client never states a
verdict. ``UNIQUE`` on the
execution id and on the marker means a run is counted at most once and a
marker is never reused; concurrent runs of one prompt are serialised by the
writer and each gets its own row, so the counts (a fold over the rows, see
:mod:`service.prompts.ledger`) are exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.prompts.verdict import judge as judge_transcript
from service.prompts.verdict import transcript_text

#: A store connection (:class:`service.store.dialect.Conn`), by name only: the
#: client side reads this module and must not import the store.
Conn = Any

NAMESPACE = "prompts"

MIGRATIONS = [
    """
    CREATE TABLE prompt_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt TEXT NOT NULL,
        version INTEGER NOT NULL,
        execution_id TEXT NOT NULL UNIQUE,
        marker TEXT NOT NULL UNIQUE,
        argv TEXT NOT NULL,
        state TEXT NOT NULL,
        exit_code INTEGER,
        verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
        reasons TEXT NOT NULL,
        patterns TEXT NOT NULL,
        transcript_sha256 TEXT NOT NULL,
        transcript_bytes INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX prompt_runs_prompt ON prompt_runs(prompt, id);
    """,
]

#: Slack between the prompt's timeout and a run's measured duration.
TIMEOUT_TOLERANCE_S = 1.0
#: How much of a failed run's last output line is kept among its reasons.
LAST_OUTPUT_CHARS = 300

FINAL_STATES = ("completed", "failed", "cancelled", "timed_out", "lost")


class NotSettled(Exception):
    """The execution has not finished, or its transcript is not all stored yet."""


class Refused(Exception):
    """The run cannot be recorded (unknown execution, marker or run reused)."""


class UnknownExecution(Refused):
    """The store has no such execution."""


@dataclass(frozen=True)
class RunClaim:
    """What the client asks the server to judge: never a verdict."""

    prompt: str
    version: int
    execution_id: str
    marker: str
    patterns: tuple[str, ...]
    timeout_s: float | None


def _row_to_dict(row: tuple[Any, ...], names: Sequence[str]) -> dict[str, Any]:
    data = dict(zip(names, row, strict=True))
    data["argv"] = json.loads(data["argv"])
    data["reasons"] = json.loads(data["reasons"])
    data["patterns"] = json.loads(data["patterns"])
    return data


COLUMNS = (
    "id",
    "prompt",
    "version",
    "execution_id",
    "marker",
    "argv",
    "state",
    "exit_code",
    "verdict",
    "reasons",
    "patterns",
    "transcript_sha256",
    "transcript_bytes",
    "created_at",
)


def stored_transcript(conn: Conn, execution_id: str) -> str:
    rows = conn.execute(
        "SELECT seq, data FROM chunks WHERE execution_id = ? ORDER BY seq", (execution_id,)
    ).fetchall()
    return transcript_text({"seq": seq, "data": data} for seq, data in rows)


@dataclass(frozen=True)
class FinishedRun:
    """What the store holds about a finished execution, read for judging."""

    state: str
    exit_code: int | None
    argv: list[str]
    unstored: int
    started_at: float | None
    ended_at: float | None
    transcript: str


def read_finished(conn: Conn, claim: RunClaim) -> FinishedRun:
    """Read the finished execution and its transcript from the ``core`` tables.

    Runs on a reader connection: the execution is finished, so what it reads
    no longer changes. Raises :class:`NotSettled` while the execution runs or
    its chunks are still queued for the writer, :class:`UnknownExecution` when
    the store has no such execution."""
    row = conn.execute(
        "SELECT state, exit_code, argv, last_seq, stored_chunks, unstored_chunks, "
        "started_at, ended_at FROM executions WHERE id = ?",
        (claim.execution_id,),
    ).fetchone()
    if row is None:
        raise UnknownExecution(f"execution {claim.execution_id} is not in the store")
    state, exit_code, argv_json, last_seq, stored, unstored, started_at, ended_at = row
    if state not in FINAL_STATES:
        raise NotSettled(f"execution {claim.execution_id} is still {state}")
    if int(stored) + int(unstored) < int(last_seq):
        raise NotSettled(f"execution {claim.execution_id}'s transcript is still being stored")
    return FinishedRun(
        state,
        exit_code,
        json.loads(argv_json),
        int(unstored),
        started_at,
        ended_at,
        stored_transcript(conn, claim.execution_id),
    )


def judge(run: FinishedRun, claim: RunClaim) -> dict[str, Any]:
    """Judge the run; the record to insert (no id yet). Pure, but it runs the
    claim's patterns: call it off the event loop and off the store's readers
    (it may take up to the pattern budget, then raises
    :class:`~service.prompts.verdict.PatternTimeout`)."""
    state, exit_code, unstored = run.state, run.exit_code, run.unstored
    started_at, ended_at, argv, transcript = run.started_at, run.ended_at, run.argv, run.transcript
    verdict = judge_transcript(
        state=state,
        exit_code=exit_code,
        transcript=transcript,
        marker=claim.marker,
        patterns=claim.patterns,
        timeout_s=claim.timeout_s,
    )
    reasons = list(verdict.reasons)
    if not any(claim.marker in word for word in argv):
        # The marker must have been handed to this very command.
        reasons.append("marker was not passed to the command")
    if int(unstored):
        reasons.append(f"{unstored} chunks past the transcript cap were not stored")
    if claim.timeout_s is not None and started_at is not None and ended_at is not None:
        ran_s = float(ended_at) - float(started_at)
        if ran_s > claim.timeout_s + TIMEOUT_TOLERANCE_S and state != "timed_out":
            # Started with a longer timeout than the prompt allows.
            reasons.append(f"ran {ran_s:.1f} s, longer than the prompt's {claim.timeout_s:g} s")
    if reasons:
        # What the run said last is usually why it failed ("FAILED: ..."): keep it
        # with the record for the review.
        last = next((line for line in reversed(transcript.splitlines()) if line.strip()), "")
        if last:
            reasons.append(f"last output: {last.strip()[:LAST_OUTPUT_CHARS]}")
    return {
        "prompt": claim.prompt,
        "version": claim.version,
        "execution_id": claim.execution_id,
        "marker": claim.marker,
        "argv": json.dumps(argv),
        "state": state,
        "exit_code": exit_code,
        "verdict": "fail" if reasons else "pass",
        "reasons": json.dumps(reasons),
        "patterns": json.dumps(list(claim.patterns)),
        "transcript_sha256": verdict.transcript_sha256,
        "transcript_bytes": verdict.transcript_bytes,
        "created_at": time.time(),
    }


def insert(conn: Conn, record: dict[str, Any]) -> dict[str, Any]:
    """Insert a judged record (in the writer's transaction); the stored record.
    Raises :class:`Refused` when its execution or marker was recorded before."""
    reused = conn.execute(
        "SELECT id FROM prompt_runs WHERE execution_id = ? OR marker = ?",
        (record["execution_id"], record["marker"]),
    ).fetchone()
    if reused is not None:
        raise Refused(f"run {reused[0]} already recorded this execution or marker")
    # RETURNING, not lastrowid: both engines give the new id this way.
    new_id = conn.execute(
        f"INSERT INTO prompt_runs ({', '.join(record)}) "
        f"VALUES ({', '.join('?' * len(record))}) RETURNING id",
        tuple(record.values()),
    ).fetchone()[0]
    return _row_to_dict((new_id, *record.values()), COLUMNS)


def list_records(conn: Conn, prompt: str | None, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Records oldest first, with ``id > after_id``, optionally of one prompt."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM prompt_runs WHERE id > ?"
    args: list[Any] = [after_id]
    if prompt is not None:
        sql += " AND prompt = ?"
        args.append(prompt)
    sql += " ORDER BY id LIMIT ?"
    args.append(limit)
    return [_row_to_dict(row, COLUMNS) for row in conn.execute(sql, args).fetchall()]
