"""The store's admission and the gate: the held child execs on the writer
thread's commit, and a commit that comes after a refusal opens nothing. Real
processes, a real store (both engines), in process."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from service.errors import StoreUnavailable
from service.params import ExecuteParams
from service.process.spawn import build_spec
from service.process.supervisor import Supervisor
from service.settings import Settings
from service.store import lifecycle, make_store
from tests.utils import MARKER_NAME, marked_pids, wait_until


class Sink:
    def offer(self, frame: str, *, droppable: bool) -> bool:
        return True


def _program(ran: Path) -> list[str]:
    return [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"]


async def _stores(settings: Settings) -> tuple[Any, Supervisor]:
    store = make_store(settings)
    supervisor = Supervisor(settings)
    lifecycle.build(store, supervisor)  # the core schema, the recorder, the admission
    await store.open()
    return store, supervisor


def test_the_held_child_execs_on_the_commit_without_the_event_loop(
    tmp_path: Path, marker: dict[str, str], store_url: str | None
) -> None:
    """The writer thread opens the gate right after the commit: the program runs
    while the event loop is still blocked, before the loop hears of the commit."""
    settings = Settings(data_dir=tmp_path, store_url=store_url, store_timeout_s=30)
    ran = tmp_path / "ran"

    async def main() -> None:
        store, supervisor = await _stores(settings)
        try:
            stall = threading.Event()
            store.submit(lambda conn: stall.wait(20))  # the insert queues behind it
            spec = build_spec(ExecuteParams(argv=_program(ran), env=marker), settings)
            starting = asyncio.ensure_future(supervisor.start(spec, Sink()))
            held = await asyncio.to_thread(wait_until, lambda: marked_pids(marker[MARKER_NAME]), 10)
            assert held, "no child held while recording"
            await asyncio.sleep(0.3)
            assert not ran.exists(), "ran before the commit"
            # Block the loop: only the writer thread can open the gate now.
            stall.set()
            ran_while_blocked = wait_until(ran.exists, 10)
            assert ran_while_blocked, "the program waited for the event loop"
            assert not starting.done()
            execution = await asyncio.wait_for(starting, 10)
            await asyncio.wait_for(execution.finished.wait(), 10)
            assert execution.state.value == "completed", execution.error
        finally:
            await supervisor.shutdown()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_commit_after_the_refusal_opens_nothing(
    tmp_path: Path, marker: dict[str, str], store_url: str | None
) -> None:
    """The row is committed only after ``store_timeout_s``: the execute was
    refused by then, so the late commit must not let the held child through;
    it exits having run nothing, and the late row is ended, not ``starting``."""
    settings = Settings(data_dir=tmp_path, store_url=store_url, store_timeout_s=0.5)
    ran = tmp_path / "ran"

    async def main() -> None:
        store, supervisor = await _stores(settings)
        try:
            stall = threading.Event()
            store.submit(lambda conn: stall.wait(20))
            spec = build_spec(ExecuteParams(argv=_program(ran), env=marker), settings)
            starting = asyncio.ensure_future(supervisor.start(spec, Sink()))
            with pytest.raises(StoreUnavailable, match="not started"):
                await asyncio.wait_for(starting, 10)
            stall.set()  # the insert commits now, late
            await asyncio.sleep(1.0)
            assert not ran.exists(), "the late commit let the refused program run"
            assert await asyncio.to_thread(
                wait_until, lambda: not marked_pids(marker[MARKER_NAME]), 5
            )
            await store.write(lambda conn: None)  # a barrier: every queued job ran
            states = await store.read(
                lambda conn: [
                    row[0] for row in conn.execute("SELECT state FROM executions").fetchall()
                ]
            )
            assert "starting" not in states, states
        finally:
            await supervisor.shutdown()
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))
