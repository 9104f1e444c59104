"""Where ``prompts audit`` and ``prompts report`` read records and transcripts.

Two sources with one interface:

- :class:`ServerSource`: a running executor, through the wire methods
  ``prompts.records`` and ``transcript.get`` (the store's transcript, never
  the live stream). Used with ``--url``.
- :class:`FileSource`: the store's SQLite file in the data directory, opened
  **read-only** (``mode=ro``). Safe while a server is writing to it (WAL), and
  it cannot move a count: only the server writes records.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.client import ExecutorClient
from service.errors import NotFound
from service.prompts import records as records_sql
from service.prompts.ledger import Record
from service.prompts.verdict import transcript_text

PAGE = 1000


class SourceError(Exception):
    """The records cannot be read (no store file, no such table, server refused)."""


@dataclass(frozen=True)
class StoredRun:
    """What the store holds about an execution, independently of any record."""

    transcript: str
    state: str
    #: None where the source does not expose it (``transcript.get`` has no exit code).
    exit_code: int | None


class RecordSource(Protocol):
    async def records(self, prompt: str | None = None) -> list[Record]: ...

    async def stored_run(self, execution_id: str) -> StoredRun | None:
        """The stored transcript and state, or None when the store no longer has them."""
        ...


def _chunks_of(page: Any) -> list[dict[str, Any]]:
    if isinstance(page, dict):
        for key in ("chunks", "items", "transcript"):
            if isinstance(page.get(key), list):
                return list(page[key])
    return list(page) if isinstance(page, list) else []


class ServerSource:
    def __init__(self, client: ExecutorClient) -> None:
        self.client = client

    async def records(self, prompt: str | None = None) -> list[Record]:
        found: list[Record] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after_id": after, "limit": PAGE}
            if prompt is not None:
                params["prompt"] = prompt
            page = await self.client.call("prompts.records", params)
            rows = page.get("records", [])
            found += [Record.from_wire(row) for row in rows]
            if len(rows) < PAGE:
                return found
            after = int(rows[-1]["id"])

    async def stored_run(self, execution_id: str) -> StoredRun | None:
        chunks: list[dict[str, Any]] = []
        state = "unknown"
        since = 0
        while True:
            try:
                page = await self.client.call(
                    "transcript.get",
                    {"execution_id": execution_id, "since_seq": since, "limit": PAGE},
                )
            except NotFound:
                return None
            batch = _chunks_of(page)
            chunks += batch
            if isinstance(page, dict):
                state = str(page.get("state", state))
            seqs = [int(chunk["seq"]) for chunk in batch if "seq" in chunk]
            more = page.get("more") if isinstance(page, dict) else None
            if not seqs or more is False or (more is None and len(batch) < PAGE):
                return StoredRun(transcript_text(chunks), state, None)
            since = max(seqs)


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise SourceError(f"no store at {self.path} (no run was ever recorded there)")
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _records(self, prompt: str | None) -> list[Record]:
        conn = self._connect()
        try:
            found: list[Record] = []
            after = 0
            while True:
                try:
                    rows = records_sql.list_records(conn, prompt, after, PAGE)
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        return []  # the prompts namespace was never created: no records
                    raise SourceError(f"{self.path}: {exc}") from None
                found += [Record.from_wire(row) for row in rows]
                if len(rows) < PAGE:
                    return found
                after = int(rows[-1]["id"])
        finally:
            conn.close()

    def _stored_run(self, execution_id: str) -> StoredRun | None:
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT state, exit_code FROM executions WHERE id = ?", (execution_id,)
            ).fetchone()
            if row is None:
                return None
            text = records_sql.stored_transcript(conn, execution_id)
            return StoredRun(text, str(row[0]), row[1])
        finally:
            conn.close()

    async def records(self, prompt: str | None = None) -> list[Record]:
        return await asyncio.to_thread(self._records, prompt)

    async def stored_run(self, execution_id: str) -> StoredRun | None:
        return await asyncio.to_thread(self._stored_run, execution_id)
