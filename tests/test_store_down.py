"""The PostgreSQL store going away and coming back, under a real server.

A PostgreSQL server of this test's own (tests/pg.py's shared one must not go
down under other tests) is stopped with ``pg_ctl stop`` while an execution
streams, then started again. What must hold: requests that need the store
answer -32007 promptly; the execution keeps running and its output keeps
flowing live, every seq of it; nothing queues for the absent database; the
transcript reports exactly the seqs it could not store as gaps; and the node
recovers by itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.client import ExecutorClient, RemoteExecution
from service.client.postgres import PostgresServer
from service.errors import RpcError
from tests.utils import RunningServer

pytestmark = pytest.mark.pg

LINES = 150
PRODUCER = (
    f"import time\nfor i in range({LINES}):\n    print('line', i, flush=True)\n    time.sleep(0.03)"
)
TIMEOUT_S = 2.0


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def health(server: RunningServer) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(server.http_url + "/health", timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))


async def store_error_within(client: ExecutorClient, method: str, params: dict[str, Any]) -> float:
    """The call fails with -32007; how long it took."""
    started = time.monotonic()
    with pytest.raises(RpcError) as caught:
        await client.call(method, params)
    assert caught.value.code == -32007, caught.value
    return time.monotonic() - started


async def until_back(client: ExecutorClient, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            await client.call("executions.list", {"limit": 1})
            return
        except RpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_database_down_then_back(
    make_server: Callable[..., RunningServer], own_pg: PostgresServer, marker: dict[str, str]
) -> None:
    url = own_pg.create_database()
    server = make_server({"store_url": url, "store_timeout_s": TIMEOUT_S})

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=[sys.executable, "-c", PRODUCER], env=marker)
            live: list[int] = []
            ends: list[dict[str, Any]] = []

            async def read() -> None:
                async for message in execution.events():
                    if message["method"] == "process.output":
                        live.append(message["params"]["seq"])
                    else:
                        ends.append(message)

            reader = asyncio.create_task(read())
            while len(live) < 10:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(own_pg.stop)
            at_stop = len(live)

            # The store's requests fail promptly (the first one may find out).
            for method, params in (
                ("executions.list", {"limit": 5}),
                ("transcript.get", {"execution_id": execution.id}),
                ("executions.list", {"limit": 5}),
            ):
                took = await store_error_within(client, method, params)
                assert took < TIMEOUT_S + 2, f"{method} took {took:.2f}s"
            report = await asyncio.to_thread(health, server)
            store = report["store"]
            assert store["available"] is False and store["state"] == "unreachable", store
            assert report["status"] == "degraded"
            # Nothing is held for the absent database.
            assert store["backlog"] == 0 and store["backlog_bytes"] == 0, store

            # A second client attaches meanwhile: no replay, but the live stream.
            async with ExecutorClient(server.url) as other:
                attached = await other.call("attach", {"execution_id": execution.id})
                assert attached["replay"] is False and attached["state"] == "running"
                joined = RemoteExecution(other, execution.id, attached)
                seen: list[int] = []
                async for message in joined.events():
                    if message["method"] == "process.output":
                        seen.append(message["params"]["seq"])
                        if len(seen) == 5:
                            break
                assert seen == list(range(seen[0], seen[0] + 5)) and seen[0] > attached["last_seq"]

            # The execution runs on, and its output still flows live.
            await asyncio.sleep(1.0)
            assert len(live) > at_stop + 10, "output stopped flowing while the database was down"
            await asyncio.wait_for(reader, 30)  # the whole run, database down throughout
            # (A chunk may carry several lines: count seqs, not lines.)
            assert live == list(range(1, len(live) + 1)), f"the live stream lost chunks: {ends}"
            total_bytes = ends[-1]["params"]["stdout_bytes"]
            assert total_bytes == sum(len(f"line {i}\n") for i in range(LINES)), ends

            await asyncio.to_thread(own_pg.start)
            await until_back(client)
            page = await client.call(
                "transcript.get", {"execution_id": execution.id, "limit": 10000}
            )
            # The row ended while the database was away; it was written once back.
            assert page["state"] == "completed" and page["last_seq"] == len(live), page
            stored = [chunk["seq"] for chunk in page["chunks"]]
            missing = [seq for first, last in page["gaps"] for seq in range(first, last + 1)]
            assert page["gap_chunks"] == len(missing) > 0, page["gaps"]
            assert sorted(stored + missing) == live, "seqs unaccounted for"
            assert page["stored_chunks"] == len(stored)
            assert page["unstored_chunks"] == len(missing)
            assert page["transcript_capped"] is False
            stored_text = "".join(chunk["data"] for chunk in page["chunks"])
            assert len(stored_text) + page["unstored_bytes"] == total_bytes
            assert re.fullmatch(r"(line \d+\n)+", stored_text), stored_text[:200]

            # And the next execution is stored whole.
            after = await client.run(argv=["echo", "after"], env=marker)
            page = await client.call("transcript.get", {"execution_id": after.execution_id})
            assert [c["data"] for c in page["chunks"]] == ["after\n"] and page["gaps"] == []
            report = await asyncio.to_thread(health, server)
            assert report["store"]["available"] is True, report["store"]

            # Down while idle: the first read finds out within store_timeout_s.
            await asyncio.to_thread(own_pg.stop)
            took = await store_error_within(client, "executions.list", {"limit": 5})
            assert took < TIMEOUT_S + 2, took
            await asyncio.to_thread(own_pg.start)
            await until_back(client)

    asyncio.run(asyncio.wait_for(main(), 90))
    messages = server.log_messages()
    assert "store database unreachable; writes fail until it is back" in messages
    assert "store database reachable again; writes resume" in messages
