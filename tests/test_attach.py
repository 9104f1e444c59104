"""attach: replay from the store, then live, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import websockets

from service.client import ExecutorClient
from service.errors import NotFound
from tests.pg import on_store
from tests.utils import RunningServer, run


@pytest.fixture
def make_server(
    make_server: Callable[..., RunningServer], store_url: str | None
) -> Callable[..., RunningServer]:
    """Every test here runs on both engines (tests/pg.py)."""
    return on_store(make_server, store_url)


@pytest.fixture
def server(module_server: RunningServer) -> RunningServer:
    return module_server


def seq_output(n: int) -> str:
    return subprocess.run(["seq", "1", str(n)], capture_output=True, text=True, check=True).stdout


async def wait_state(client: ExecutorClient, execution_id: str) -> str:
    """Poll the store until the execution is finished (20 s at most); its state."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        page = await client.call("transcript.get", {"execution_id": execution_id, "limit": 1})
        if page["state"] not in ("starting", "running", "paused"):
            return str(page["state"])
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {page['state']}")
        await asyncio.sleep(0.05)


def test_drop_mid_stream_and_reattach(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    """A client drops in the middle of ``seq 1 500000``; another connection
    attaches with the last seq it saw: what the first saw plus the replay and
    the live rest is exactly the output, and the detach timer was stopped."""
    server = make_server({"detach_grace_s": 1})
    expected = seq_output(500000)

    async def main() -> None:
        first = ExecutorClient(server.url)
        await first.connect()
        run_ = await first.execute(argv=["sh", "-c", "seq 1 500000 | pv -q -L 1m"], env=marker)
        seen: list[str] = []
        last_seq = 0
        async for message in run_.events():
            if message["method"] == "process.output":
                params = message["params"]
                assert params["seq"] == last_seq + 1, "the reading client saw a gap"
                last_seq = params["seq"]
                seen.append(params["data"])
                if sum(map(len, seen)) > 400_000:
                    break
        first.websocket.transport.abort()  # a dropped network, not a clean close
        await first.close()
        await asyncio.sleep(0.3)
        async with ExecutorClient(server.url) as second:
            attached = await second.attach(run_.id, since_seq=last_seq)
            assert attached.info["status"] == "attached"
            result = await attached.wait(30)
        assert result.status == "completed", "the detach timer cancelled it"
        assert result.seqs == list(range(last_seq + 1, last_seq + 1 + len(result.seqs)))
        assert "".join(seen) + result.stdout == expected
        assert result.dropped == 0

    run(main())


def test_non_reading_client_then_attach_gets_everything(
    server: RunningServer, marker: dict[str, str]
) -> None:
    """A client that never reads during a flood loses chunks live; attach with
    since_seq 0 replays the whole transcript."""
    expected = seq_output(500000)

    async def main() -> None:
        silent = await websockets.connect(server.url, max_size=None)
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "execute",
            "params": {"argv": ["seq", "1", "500000"], "env": marker},
        }
        await silent.send(orjson.dumps(request).decode())
        async with ExecutorClient(server.url) as viewer:
            # The execution id arrives in the response the silent client never
            # reads; find it in the store's history instead.
            execution_id = None
            for _ in range(200):
                listing = await viewer.call("executions.list", {"limit": 5})
                for row in listing["executions"]:
                    if row["argv"] == ["seq", "1", "500000"] and row["connection_id"]:
                        execution_id = row["execution_id"]
                if execution_id:
                    break
                await asyncio.sleep(0.02)
            assert execution_id is not None
            assert await wait_state(viewer, execution_id) == "completed"
            attached = await viewer.attach(execution_id, since_seq=0)
            result = await attached.wait(30)
            assert result.stdout == expected
            assert result.seqs == list(range(1, len(result.seqs) + 1))
            assert result.status == "completed"
        silent.transport.abort()  # a clean close would wait for the unread frames

    run(main())


def test_cap_stores_a_prefix_and_says_so(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    cap = 256 * 1024
    server = make_server({"max_transcript_bytes": cap, "flush_bytes": 4096})
    expected = seq_output(200000)

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            done = await client.run(argv=["seq", "1", "200000"], env=marker)
            assert done.stdout == expected
            page = await client.call("transcript.get", {"execution_id": done.execution_id})
            assert page["transcript_capped"] is True
            assert page["unstored_chunks"] > 0
            stored = "".join(chunk["data"] for chunk in page["chunks"])
            assert len(stored.encode()) <= cap
            assert expected.startswith(stored)
            # Filled up to the cap: the first chunk left out would not have fitted.
            chunks = [e["params"]["data"] for e in done.events if e["method"] == "process.output"]
            first_out = chunks[len(page["chunks"])]
            assert len(stored.encode()) + len(first_out.encode()) > cap
            attached = await client.attach(done.execution_id, since_seq=0)
            replay = await attached.wait(10)
            assert replay.stdout == stored
            assert replay.status == "completed"

    run(main())


async def follow(client: ExecutorClient, execution_id: str) -> tuple[str, int]:
    """Collect an execution's whole output as a demanding client does: attach
    from 0, and after a gap (a chunk dropped live) attach again from the last
    contiguous seq. Within one attach, seqs must never repeat or go back.
    The output, and how many attaches it took."""
    data: list[str] = []
    last = 0
    attaches = 0
    while True:
        attaches += 1
        attached = await client.attach(execution_id, since_seq=last)
        result = await attached.wait(40)
        assert result.seqs == sorted(set(result.seqs)), "a duplicate or reordered chunk"
        for message in result.events:
            if message["method"] != "process.output":
                continue
            params = message["params"]
            if params["seq"] != last + 1:
                break  # a gap: replay it from the store
            data.append(params["data"])
            last = params["seq"]
        else:
            if result.dropped == 0:
                return "".join(data), attaches
        assert attaches < 20


def test_second_viewer_during_a_flood_gets_exact_output(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    """A second connection attaches from seq 0 while a fast producer runs: the
    replay must catch up with live output that overflows what is held for it
    (small outbox), in as many rounds as it takes, with no gap or duplicate at
    the seam. Once live, a reader slower than the producer sees the usual gap
    and fills it with another attach."""
    server = make_server({"max_pending_bytes": 65536})
    n = 1_000_000
    expected = seq_output(n)

    async def main() -> None:
        async with ExecutorClient(server.url) as owner, ExecutorClient(server.url) as viewer:
            started = await owner.execute(argv=["seq", "1", str(n)], env=marker)
            first = await owner._queue(started.id).get()
            assert first is not None
            output, _ = await follow(viewer, started.id)
            assert output == expected
            await started.wait(40)

    run(main())


def test_attach_errors_and_finished(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            with pytest.raises(NotFound):
                await client.attach("no-such-execution", since_seq=0)
            done = await client.run(argv=["sh", "-c", "echo a; echo b >&2; exit 3"], env=marker)
            attached = await client.attach(done.execution_id, since_seq=1)
            replay = await attached.wait(10)
            assert replay.seqs == [s for s in done.seqs if s > 1]
            assert replay.status == "failed" and replay.exit_code == 3

            def outputs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [e["params"] for e in events if e["method"] == "process.output"]

            assert outputs(replay.events) == [p for p in outputs(done.events) if p["seq"] > 1]
            assert replay.completed["dropped"] == 0

    run(main())
