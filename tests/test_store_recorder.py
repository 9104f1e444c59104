"""The recorder under a stalled writer: real processes, a real store, in process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from service.params import ExecuteParams
from service.settings import Settings
from service.spawn import build_spec
from service.store import Store
from service.store.recorder import Recorder
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE
from service.supervisor import Supervisor

#: Many small chunks: one flushed 1 KiB line at a time.
PRODUCER = (
    "import sys\n"
    "for i in range(4000):\n"
    "    sys.stdout.write('%05d' % i + 'x' * 1100 + '\\n')\n"
    "    sys.stdout.flush()\n"
)


class Counter:
    """A sink that takes every frame (a client that keeps up)."""

    def __init__(self) -> None:
        self.frames = 0

    def offer(self, frame: str, *, droppable: bool) -> bool:
        self.frames += 1
        return True


def test_a_stalled_writer_throttles_the_producer_and_loses_nothing(
    tmp_path: Path, marker: dict[str, str]
) -> None:
    """While the writer is stuck, the execution stops being read (its child
    blocks on a full pipe) instead of the server queueing without bound, and
    the event loop stays on time; once the writer moves, every chunk is stored."""
    settings = Settings(data_dir=tmp_path, store_queue_chunks=100, flush_bytes=1024)
    argv = [sys.executable, "-c", PRODUCER]
    expected = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    async def main() -> None:
        store = Store(settings)
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

        def read(conn: Any) -> tuple[str, int, int]:
            rows = conn.execute(
                "SELECT data FROM chunks WHERE execution_id = ? ORDER BY seq", (execution.id,)
            ).fetchall()
            state, last_seq = conn.execute(
                "SELECT state, last_seq FROM executions WHERE id = ?", (execution.id,)
            ).fetchone()
            return "".join(row[0] for row in rows), state, last_seq

        text, state, last_seq = await store.read(read)
        assert text == expected
        assert state == "completed" and last_seq == execution.seq
        await supervisor.shutdown()
        await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))
