"""What the recorder writes: the execution rows' statements, the chunk rows,
the notification channels, and the :class:`Tally` it keeps per execution.

The statements are written once, in SQLite's dialect
(:mod:`service.store.dialect`); ``UPSERT_EXECUTION`` writes a whole row,
inserted or brought up to date, for the rows an outage of the database kept
back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The notification channels (PostgreSQL ``LISTEN``) and their payloads.
OUTPUT_CHANNEL = "cc_output"  # "<execution_id>:<last stored seq>", per committed batch
STATE_CHANNEL = "cc_state"  # "<execution_id>:<state>", per transition
PROJECTS_CHANNEL = "cc_projects"  # "<project_id>", per project created or deleted
#: Gap ranges kept per execution; past it the last range grows to cover the rest.
MAX_GAP_RANGES = 100


@dataclass(slots=True)
class Tally:
    """What the recorder knows of one live execution's transcript."""

    stored_chunks: int = 0
    stored_bytes: int = 0
    unstored_chunks: int = 0
    unstored_bytes: int = 0
    capped: bool = False
    #: Chunks not stored because the database could not be reached.
    gap_chunks: int = 0
    gap_bytes: int = 0
    gaps: list[list[int]] = field(default_factory=list)

    def add_gap(self, first: int, last: int, chunks: int, nbytes: int) -> None:
        """Count seqs ``first..last`` as not stored. A failed batch is reported
        after the chunks that followed it were counted, so ranges may come out
        of order: they are kept sorted and merged."""
        self.gap_chunks += chunks
        self.gap_bytes += nbytes
        self.unstored_chunks += chunks
        self.unstored_bytes += nbytes
        if self.gaps and first > self.gaps[-1][1] + 1 and len(self.gaps) < MAX_GAP_RANGES:
            self.gaps.append([first, last])  # the usual case: after the others
            return
        merged: list[list[int]] = []
        for start, end in sorted([*self.gaps, [first, last]]):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        while len(merged) > MAX_GAP_RANGES:
            tail = merged.pop()
            merged[-1][1] = tail[1]
        self.gaps = merged


ChunkRow = tuple[str, int, str, str | bytes, int, int, float]

_FIRST_COLUMNS = (
    "id, connection_id, server_id, boot_id, node, command, argv, cwd, project_id, created_at"
)
_STATE_COLUMNS = (
    "state, reason, pid, pgid, start_ticks, exit_code, signal, started_at, ended_at, "
    "updated_at, stdout_bytes, stderr_bytes, last_seq, stored_chunks, stored_bytes, "
    "unstored_chunks, unstored_bytes, gap_chunks, gap_bytes, gaps"
)


def _names(columns: str) -> list[str]:
    return [name.strip() for name in columns.split(",")]


INSERT_EXECUTION = (
    f"INSERT INTO executions ({_FIRST_COLUMNS}, {_STATE_COLUMNS}) VALUES ("
    + ", ".join(f":{name}" for name in _names(_FIRST_COLUMNS) + _names(_STATE_COLUMNS))
    + ")"
)

#: The whole row, inserted or brought up to date: the write after an outage.
UPSERT_EXECUTION = (
    INSERT_EXECUTION
    + " ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _names(_STATE_COLUMNS))
)

UPDATE_EXECUTION = """
UPDATE executions SET
    state = :state, reason = :reason, pid = :pid, pgid = :pgid, start_ticks = :start_ticks,
    exit_code = :exit_code, signal = :signal, started_at = :started_at, ended_at = :ended_at,
    updated_at = :updated_at, stdout_bytes = :stdout_bytes, stderr_bytes = :stderr_bytes,
    last_seq = :last_seq, stored_chunks = :stored_chunks, stored_bytes = :stored_bytes,
    unstored_chunks = :unstored_chunks, unstored_bytes = :unstored_bytes,
    gap_chunks = :gap_chunks, gap_bytes = :gap_bytes, gaps = :gaps
WHERE id = :id
"""

INSERT_CHUNK = """
INSERT OR IGNORE INTO chunks (execution_id, seq, stream, data, nbytes, truncated, ts)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

UPDATE_COUNTS = """
UPDATE executions SET
    last_seq = :last_seq, stdout_bytes = :stdout_bytes, stderr_bytes = :stderr_bytes,
    stored_chunks = :stored_chunks, stored_bytes = :stored_bytes,
    unstored_chunks = :unstored_chunks, unstored_bytes = :unstored_bytes,
    gap_chunks = :gap_chunks, gap_bytes = :gap_bytes, gaps = :gaps, updated_at = :updated_at
WHERE id = :id
"""
