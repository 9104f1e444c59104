"""``stats.subscribe``: ``server.stats`` from a real server at a 1 s interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.client import ExecutorClient
from service.errors import RpcError
from tests.utils import runner

run = runner(90)

FIELDS = {
    "connections",
    "executions",
    "spawned",
    "completed",
    "output_bytes_per_s",
    "dropped_chunks",
    "rss_bytes",
    "cpu_share",
    "store_bytes",
    "store_backlog_bytes",
    "containment",
}


async def next_stats(client: ExecutorClient, within_s: float) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(client.notifications.get(), within_s)
        if message.get("method") == "server.stats":
            params: dict[str, Any] = message["params"]
            return params


def test_server_stats_every_second(make_server: Any, marker: dict[str, str]) -> None:
    running = make_server({"cgroup_root": "off"})  # containment: process groups

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            assert {"stats.subscribe", "stats.unsubscribe"} <= set(client.capabilities)
            answer = await client.call("stats.subscribe", {"interval_s": 1})
            assert answer == {"subscribed": True, "interval_s": 1.0}
            first = await next_stats(client, 5)
            started = time.monotonic()
            assert set(first) == FIELDS
            assert first["connections"] == 1
            assert first["containment"] == "process-group"
            assert first["rss_bytes"] > 10 * 1024 * 1024
            assert set(first["executions"]) == {"starting", "running", "paused"}
            # One execution between two notifications: counted once, in the next.
            result = await client.run(argv=["seq", "1", "1000"], env=marker, wait_timeout=20)
            assert result.status == "completed"
            sleeper = await client.execute(argv=["sleep", "30"], env=marker)
            spawned = completed = 0
            output = 0.0
            seen: dict[str, Any] = {}
            while spawned < 2 or completed < 1:
                seen = await next_stats(client, 5)
                spawned += seen["spawned"]
                completed += seen["completed"]
                output += seen["output_bytes_per_s"]
            assert (spawned, completed) == (2, 1)
            assert output > 0
            assert seen["executions"]["running"] == 1
            # The cadence is about a second (generous bounds: the machine is shared).
            second = await next_stats(client, 5)
            assert second["spawned"] == 0
            elapsed = time.monotonic() - started
            assert 1.0 <= elapsed < 15
            await sleeper.cancel()
            await sleeper.wait(20)

            assert await client.call("stats.unsubscribe") == {
                "subscribed": False,
                "was_subscribed": True,
            }
            while not client.notifications.empty():
                client.notifications.get_nowait()
            await asyncio.sleep(2.5)
            late = []
            while not client.notifications.empty():
                late.append(client.notifications.get_nowait()["method"])
            assert "server.stats" not in late
            assert (await client.call("stats.unsubscribe"))["was_subscribed"] is False

    run(main())


@pytest.mark.parametrize("interval", [0, 0.5, -1, "10", 1e9])
def test_bad_interval_is_invalid_params(make_server: Any, interval: Any) -> None:
    running = make_server()

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            with pytest.raises(RpcError) as caught:
                await client.call("stats.subscribe", {"interval_s": interval})
            assert caught.value.code == -32602
            # The connection stays usable, and unsubscribed.
            assert (await client.call("stats.unsubscribe"))["was_subscribed"] is False

    run(main())


def test_a_subscriber_that_does_not_read_loses_stats_not_memory(tmp_path: Any) -> None:
    """The hub with real metrics, supervisor and outbox; the connection is
    only what the hub uses of one (an id, an outbox, a logger), never drained."""
    import logging

    from service.metrics import Metrics
    from service.outbox import Outbox
    from service.probes import ProcessReader
    from service.process.supervisor import Supervisor
    from service.settings import Settings
    from service.stats import StatsHub

    class Silent:
        id = "silent"
        outbox = Outbox(64 * 1024)
        log = logging.getLogger("test")

    async def main() -> tuple[int, int]:
        settings = Settings(data_dir=tmp_path)
        hub = StatsHub(Metrics(True), Supervisor(settings), ProcessReader())
        silent = Silent()
        task = asyncio.create_task(hub._run(silent, 0.001))  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while silent.outbox.dropped_frames < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return silent.outbox.pending_bytes, silent.outbox.dropped_frames

    pending, dropped = run(main())
    assert dropped >= 50
    assert pending <= 64 * 1024
