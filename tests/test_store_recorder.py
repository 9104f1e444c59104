"""The recorder under a stalled writer: real processes, a real store (both
engines), in process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from service.params import ExecuteParams
from service.process.spawn import build_spec
from service.process.supervisor import Supervisor
from service.settings import Settings
from service.store import make_store
from service.store.recorder import Recorder
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE

#: Many chunks whatever the read sizes: every line is longer than
#: ``max_line_bytes`` (64), so each is cut and sent as a chunk of its own.
LINES = 4000
PRODUCER = f"import sys\nfor i in range({LINES}): sys.stdout.write('%05d' % i + 'x' * 100 + '\\n')"


class Counter:
    """A sink that takes every frame (a client that keeps up)."""

    def __init__(self) -> None:
        self.frames = 0

    def offer(self, frame: str, *, droppable: bool) -> bool:
        self.frames += 1
        return True


def test_a_stalled_writer_throttles_the_producer_and_loses_nothing(
    tmp_path: Path, marker: dict[str, str], store_url: str | None
) -> None:
    """While the writer is stuck, the execution stops being read (its child
    blocks on a full pipe) instead of the server queueing without bound, and
    the event loop stays on time; once the writer moves, every chunk is stored."""
    settings = Settings(
        data_dir=tmp_path, store_queue_chunks=100, max_line_bytes=64, store_url=store_url
    )
    argv = [sys.executable, "-c", PRODUCER]
    lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    expected = [line[:64] + "\n" for line in lines]  # cut lines keep their newline

    async def main() -> None:
        store = make_store(settings)
        store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
        await store.open()
        supervisor = Supervisor(settings)
        recorder = Recorder(store, supervisor)
        supervisor.observers.append(recorder)
        stall = threading.Event()
        store.submit(lambda conn: stall.wait(20))
        spec = build_spec(ExecuteParams(argv=argv, env=marker), settings)
        execution = await supervisor.start(spec, Counter())
        late: list[float] = []
        deadline = time.monotonic() + 10
        while execution.flow.is_set() and time.monotonic() < deadline:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            late.append(time.monotonic() - before - 0.005)
        assert not execution.flow.is_set(), "the producer was never throttled"
        seq_when_throttled = execution.seq
        for _ in range(20):
            before = time.monotonic()
            await asyncio.sleep(0.01)
            late.append(time.monotonic() - before - 0.01)
        assert max(late) < 0.25, "the event loop stalled"
        assert execution.seq <= seq_when_throttled + 2, "output kept being read"
        assert execution.state.is_live
        stall.set()
        await asyncio.wait_for(execution.finished.wait(), 20)
        await recorder.sync()

        def read(conn: Any) -> tuple[list[tuple[int, str]], str, int]:
            rows = conn.execute(
                "SELECT seq, data FROM chunks WHERE execution_id = ? ORDER BY seq",
                (execution.id,),
            ).fetchall()
            state, last_seq = conn.execute(
                "SELECT state, last_seq FROM executions WHERE id = ?", (execution.id,)
            ).fetchone()
            return rows, state, last_seq

        rows, state, last_seq = await store.read(read)
        assert [row[0] for row in rows] == list(range(1, LINES + 1))
        assert [row[1] for row in rows] == expected
        assert state == "completed" and last_seq == execution.seq
        await supervisor.shutdown()
        await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))
