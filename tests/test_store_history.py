"""executions.list, transcript.get and retention, against a real server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import pytest

from service.client import ExecutorClient
from service.errors import InvalidParams, InvalidState, NotFound
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


TICKER = (
    "import sys, time\nfor i in range(40):\n    print('line', i, flush=True)\n    time.sleep(0.004)"
)


async def all_ids(client: ExecutorClient, limit: int, **filters: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await client.call("executions.list", {"limit": limit, "cursor": cursor, **filters})
        assert len(page["executions"]) <= limit
        ids += [row["execution_id"] for row in page["executions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_executions_list_pages_newest_first(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            mine = []
            for i in range(5):
                done = await client.run(argv=["sh", "-c", f"echo {i}; exit {i % 2}"], env=marker)
                mine.append(done.execution_id)
            ids = await all_ids(client, 2)
            assert len(ids) == len(set(ids)), "a row appeared on two pages"
            assert [i for i in ids if i in mine] == mine[::-1]
            failed = await all_ids(client, 3, state="failed")
            assert [i for i in failed if i in mine] == [mine[3], mine[1]]
            first = (await client.call("executions.list", {"limit": 1}))["executions"][0]
            assert first["execution_id"] == mine[-1]
            assert first["argv"] == ["sh", "-c", "echo 4; exit 0"]
            assert first["state"] == "completed" and first["exit_code"] == 0
            assert first["stdout_bytes"] == 2 and first["last_seq"] == 1
            assert first["pid"] and first["connection_id"] == client.session_id
            with pytest.raises(InvalidParams):
                await client.call("executions.list", {"cursor": "nope"})
            with pytest.raises(InvalidParams):
                await client.call("executions.list", {"state": "sleeping"})
            with pytest.raises(InvalidParams):
                await client.call("executions.list", {"limit": 0})

    run(main())


def test_transcript_get_pages_by_count_and_bytes(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            done = await client.run(argv=[sys.executable, "-c", TICKER], env=marker)
            assert len(done.seqs) > 5
            chunks: list[dict[str, Any]] = []
            since = 0
            while True:
                page = await client.call(
                    "transcript.get",
                    {"execution_id": done.execution_id, "since_seq": since, "limit": 3},
                )
                assert len(page["chunks"]) <= 3
                chunks += page["chunks"]
                since = page["next_since_seq"]
                if not page["more"]:
                    break
            assert [c["seq"] for c in chunks] == done.seqs
            assert "".join(c["data"] for c in chunks) == done.stdout
            assert page["state"] == "completed" and page["transcript_capped"] is False

            big = await client.run(argv=["seq", "1", "100000"], env=marker)
            page = await client.call(
                "transcript.get", {"execution_id": big.execution_id, "max_bytes": 1024}
            )
            assert len(page["chunks"]) == 1 and page["more"] is True  # at least one chunk
            with pytest.raises(NotFound):
                await client.call("transcript.get", {"execution_id": "unknown"})
            with pytest.raises(InvalidParams):
                await client.call("transcript.get", {"execution_id": "x", "since_seq": -1})

    run(main())


async def listed(client: ExecutorClient) -> dict[str, dict[str, Any]]:
    page = await client.call("executions.list", {"limit": 100})
    return {row["execution_id"]: row for row in page["executions"]}


async def wait_gone(client: ExecutorClient, execution_id: str) -> None:
    for _ in range(300):
        if execution_id not in await listed(client):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("retention did not delete it")


def test_retention_by_size_spares_the_running(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    server = make_server(
        {"max_store_bytes": 1024 * 1024, "retention_interval_s": 0.2, "retention_min_age_s": 0}
    )

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            # The live one's transcript leaves an excess smaller than one
            # finished transcript (~575 KiB): exactly one must go.
            live = await client.execute(argv=["sh", "-c", "seq 1 40000; exec sleep 30"], env=marker)
            first = await client.run(argv=["seq", "1", "100000"], env=marker)
            second = await client.run(argv=["seq", "1", "100000"], env=marker)
            await wait_gone(client, first.execution_id)
            rows = await listed(client)
            assert second.execution_id in rows and live.id in rows
            page = await client.call("transcript.get", {"execution_id": live.id, "limit": 10000})
            text = "".join(chunk["data"] for chunk in page["chunks"])
            assert text == "".join(f"{i}\n" for i in range(1, 40001))
            await live.cancel()
            await live.wait(10)

    run(main())
    entry = server.wait_for_log(lambda e: e.get("message") == "retention deleted executions")
    assert entry["by_size"] >= 1


def test_retention_by_age_and_store_disabled(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    aging = make_server(
        {"retention_days": 0.00001, "retention_interval_s": 0.2, "retention_min_age_s": 0}
    )
    disabled = make_server({"store_enabled": "false"})

    async def main() -> None:
        async with ExecutorClient(aging.url) as client:
            live = await client.execute(argv=["sh", "-c", "echo hi; exec sleep 30"], env=marker)
            old = await client.run(argv=["echo", "old"], env=marker)
            await wait_gone(client, old.execution_id)
            assert live.id in await listed(client)
            await live.cancel()
            await live.wait(10)
        async with ExecutorClient(disabled.url) as owner, ExecutorClient(disabled.url) as viewer:
            with pytest.raises(InvalidState, match="disabled"):
                await viewer.call("executions.list", {})
            started = await owner.execute(
                argv=["sh", "-c", "read line; echo got $line"], stdin=True, env=marker
            )
            attached = await viewer.attach(started.id, since_seq=0)
            assert attached.info["replay"] is False
            await started.send_input("x\n", eof=True)
            assert (await attached.wait(10)).stdout == "got x\n"

    run(main())
