"""A congested store holds the readers (flow control bounds memory); the
output they hold back is owed to the client, so an execution that exits while
its readers are held must still deliver every line once the store catches up,
not have its pipes closed after ``exit_drain_timeout_s``."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from service.client import ExecutorClient
from service.store.database import DB_NAME
from tests.utils import run

# 150 paced lines (each its own chunk) fill the writer's queue past
# store_queue_chunks while the database is locked, so the readers are held;
# then 9000 lines (~44 KB) go into the pipe, which holds them, and the
# program exits with them unread.
SCRIPT = "i=0; while [ $i -lt 150 ]; do echo p$i; i=$((i+1)); sleep 0.01; done; seq 1 9000"


def test_output_held_by_a_congested_store_is_delivered_after_exit(make_server: Any) -> None:
    server = make_server(
        {"store_queue_chunks": 100, "exit_drain_timeout_s": 0.5, "allow_shell": True}
    )
    lock = sqlite3.connect(server.data_dir / DB_NAME, timeout=5, isolation_level=None)

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sh", "-c", SCRIPT])
            lock.execute("BEGIN IMMEDIATE")  # the row is committed; now the store stalls
            try:
                # Long past the program's exit (~2 s) and the drain timeout.
                await asyncio.sleep(5)
            finally:
                lock.execute("ROLLBACK")
            result = await execution.wait(60)
        assert result.status == "completed", result.completed
        expected = [f"p{i}" for i in range(150)] + [str(n) for n in range(1, 9001)]
        lines = result.stdout.splitlines()
        assert len(lines) == len(expected), (len(lines), lines[-3:])
        assert lines == expected
        assert result.dropped == 0
        assert result.seqs == list(range(1, len(result.seqs) + 1))

    try:
        run(main(), timeout=90)
    finally:
        lock.close()
