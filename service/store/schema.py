"""The executor's own tables (namespace ``core``): executions and transcripts.

``executions`` holds one row per execution, written when it starts and
updated on every transition; ``n`` orders them by creation (newest first in
``executions.list``). ``chunks`` holds the transcript, one row per
``process.output`` chunk, up to ``max_transcript_bytes`` per execution; the
chunks past the cap are only counted (``unstored_chunks``, ``unstored_bytes``).
``server_id`` names the server process that ran the execution and ``boot_id``
the kernel boot, so restart recovery can tell its leftovers apart.
"""

from __future__ import annotations

CORE_NAMESPACE = "core"

CORE_MIGRATIONS = [
    """
    CREATE TABLE executions (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        connection_id TEXT,
        server_id TEXT NOT NULL,
        boot_id TEXT,
        command TEXT,
        argv TEXT NOT NULL,
        cwd TEXT,
        project_id TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        pid INTEGER,
        pgid INTEGER,
        start_ticks INTEGER,
        exit_code INTEGER,
        signal INTEGER,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        updated_at REAL NOT NULL,
        stdout_bytes INTEGER NOT NULL DEFAULT 0,
        stderr_bytes INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        stored_chunks INTEGER NOT NULL DEFAULT 0,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        unstored_chunks INTEGER NOT NULL DEFAULT 0,
        unstored_bytes INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX executions_state ON executions(state, n);
    CREATE INDEX executions_project ON executions(project_id, n);
    CREATE INDEX executions_ended ON executions(ended_at);
    CREATE TABLE chunks (
        execution_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        stream TEXT NOT NULL,
        data TEXT NOT NULL,
        nbytes INTEGER NOT NULL,
        truncated INTEGER NOT NULL DEFAULT 0,
        ts REAL NOT NULL
    );
    CREATE UNIQUE INDEX chunks_seq ON chunks(execution_id, seq);
    """,
]
