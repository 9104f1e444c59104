"""The executor's own tables (namespace ``core``): executions and transcripts.

``executions`` holds one row per execution, written when it starts and
updated on every transition; ``n`` orders them by creation (newest first in
``executions.list``). ``chunks`` holds the transcript, one row per
``process.output`` chunk, up to ``max_transcript_bytes`` per execution; the
chunks past the cap are only counted (``unstored_chunks``, ``unstored_bytes``).
``server_id`` names the server process that ran the execution and ``boot_id``
the kernel boot, so restart recovery can tell its leftovers apart.

Version 2 adds ``node`` (the cluster node that ran it; NULL on rows of
earlier releases and on a server without a node id) and the transcript's
*gaps*: chunks that were not stored because the database could not be
reached (``gap_chunks``, ``gap_bytes``, and ``gaps``, a JSON list of
``[first_seq, last_seq]`` ranges); they are counted among ``unstored_*`` too.

On PostgreSQL ``chunks.data`` is ``BYTEA``: process output may hold NUL,
which PostgreSQL's ``text`` refuses (see :mod:`service.store.dialect`).
"""

from __future__ import annotations

from service.store.dialect import Migration, PerDialect, postgres_ddl

CORE_NAMESPACE = "core"

_CORE_V1 = """
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
    """

_CORE_V2 = """
    ALTER TABLE executions ADD COLUMN node TEXT;
    ALTER TABLE executions ADD COLUMN gap_chunks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN gap_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN gaps TEXT;
    CREATE INDEX executions_node ON executions(node, state);
    """

CORE_MIGRATIONS: list[Migration] = [
    PerDialect(
        sqlite=_CORE_V1,
        postgresql=postgres_ddl(_CORE_V1.replace("data TEXT NOT NULL", "data BYTEA NOT NULL")),
    ),
    _CORE_V2,
]
