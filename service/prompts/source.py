"""Where ``prompts audit`` reads the store's records and transcripts: the wire.

:class:`ServerSource` asks an executor, through ``prompts.records`` (the
records, paged), ``status`` (an execution's final state and exit code, from
memory or its store) and ``transcript.get`` (the store's transcript, never the
live stream). With ``--url`` the executor is the one named; with
``--data-dir`` it is a private one started on that data directory
(:mod:`service.prompts.connect`). The tool never opens a store itself, so it
reads whatever backend the server uses, and only the server writes records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from service.client import ExecutorClient
from service.errors import NotFound, RpcError
from service.prompts.ledger import Record
from service.prompts.verdict import transcript_text

PAGE = 1000


class SourceError(Exception):
    """The records cannot be read (the server refused: no store, say)."""


@dataclass(frozen=True)
class StoredRun:
    """What the store holds about an execution, independently of any record."""

    transcript: str
    state: str
    #: None where the store does not know it (an execution that never started).
    exit_code: int | None


class RecordSource(Protocol):
    async def records(self, prompt: str | None = None) -> list[Record]: ...

    async def stored_run(self, execution_id: str) -> StoredRun | None:
        """The stored transcript and state, or None when the store no longer has them."""
        ...


class ServerSource:
    """A :class:`RecordSource` over a connected client. Every refusal other
    than "not found" is a :class:`SourceError`."""

    def __init__(self, client: ExecutorClient) -> None:
        self.client = client

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return await self.client.call(method, params)
        except NotFound:
            raise
        except RpcError as exc:
            raise SourceError(f"the executor refused {method}: {exc.message}") from None

    async def records(self, prompt: str | None = None) -> list[Record]:
        found: list[Record] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after_id": after, "limit": PAGE}
            if prompt is not None:
                params["prompt"] = prompt
            page = await self._call("prompts.records", params)
            rows = page["records"]
            found += [Record.from_wire(row) for row in rows]
            if len(rows) < PAGE:
                return found
            after = int(rows[-1]["id"])

    async def stored_run(self, execution_id: str) -> StoredRun | None:
        try:
            status = await self._call("status", {"execution_id": execution_id})
        except NotFound:
            return None
        chunks: list[dict[str, Any]] = []
        since = 0
        while True:
            try:
                page = await self._call(
                    "transcript.get",
                    {"execution_id": execution_id, "since_seq": since, "limit": PAGE},
                )
            except NotFound:
                return None  # deleted by retention between the two calls
            chunks += page["chunks"]
            if not page["more"] or not page["chunks"]:
                break
            since = int(page["next_since_seq"])
        exit_code = status.get("exit_code")
        return StoredRun(
            transcript_text(chunks),
            str(page["state"]),
            int(exit_code) if exit_code is not None else None,
        )
