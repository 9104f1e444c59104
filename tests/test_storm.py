"""A storm of clients that cancel, pause then cancel, close, or drop the TCP
connection without a close frame, at random: afterwards no process is left and
the server is healthy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable

from service.client import ExecutionResult, ExecutorClient
from tests.utils import (
    MARKER_NAME,
    RunningServer,
    get_json,
    marked_pids,
    wait_until,
    zombie_children,
)

SESSIONS = 60
SEED = int(os.environ.get("CCX_STORM_SEED", "0")) or random.randrange(1, 10**6)

TREES = {
    # A leader and two children in its group.
    "group": "sleep 30 & sleep 30 & wait",
    # A daemon that double-forked into its own session, adopted by the server.
    "daemon": "(setsid sleep 30 &); sleep 30",
    # Ignores SIGTERM: only the SIGKILL step of the ladder ends it.
    "stubborn": "trap '' TERM; sleep 30 & wait",
}
ACTIONS = ("cancel", "pause_cancel", "close", "drop")


async def session(
    url: str,
    env: dict[str, str],
    rng: random.Random,
    started: asyncio.Barrier,
    go: asyncio.Event,
    tally: Counter[str],
) -> None:
    client = ExecutorClient(url)
    await client.connect()
    trees = [rng.choice(list(TREES)) for _ in range(rng.randint(1, 2))]
    runs = [await client.execute(argv=["sh", "-c", TREES[t]], env=env) for t in trees]
    tally["executions"] += len(runs)
    tally.update(f"tree:{t}" for t in trees)
    action = rng.choice(ACTIONS)
    tally[f"session:{action}"] += 1
    await started.wait()
    await go.wait()
    await asyncio.sleep(rng.random() * 0.3)
    if action in ("cancel", "pause_cancel"):
        for execution in runs:
            if action == "pause_cancel":
                await execution.pause()
                tally["actions"] += 1
            await execution.cancel()
            tally["actions"] += 1
        results: list[ExecutionResult] = []
        for execution in runs:
            try:
                results.append(await execution.wait(15))
            except TimeoutError:
                raise AssertionError(f"no process.completed for {execution.id}") from None
        assert {r.status for r in results} == {"cancelled"}, [r.status for r in results]
        await client.close()
    elif action == "close":
        await client.close()
        tally["actions"] += 1
    else:
        # No close frame: the TCP connection just goes away.
        client.websocket.transport.abort()
        tally["actions"] += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2)


def test_storm_of_sixty_clients_leaves_nothing(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    running = make_server(
        {
            "detach_grace_s": 0.3,
            "kill_grace_s": 1,
            "max_connections_per_ip": SESSIONS + 10,
            "max_executions": 4 * SESSIONS,
        }
    )
    value = marker[MARKER_NAME]
    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    seen: set[int] = set()

    async def storm() -> None:
        started = asyncio.Barrier(SESSIONS + 1)
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(
                session(running.url, marker, random.Random(rng.random()), started, go, tally)
            )
            for i in range(SESSIONS)
        ]
        await asyncio.wait_for(started.wait(), 60)
        # Act only once every tree has forked (each has at least two processes
        # that live), so "nothing left" is about real trees even on a loaded machine.
        deadline = time.monotonic() + 20
        while len(seen) < 2 * tally["executions"] and time.monotonic() < deadline:
            seen.update(marked_pids(value))
            await asyncio.sleep(0.05)
        go.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        seen.update(marked_pids(value))
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            ended = {
                e.get("execution_id") for e in running.logs if e.get("message") == "execution ended"
            }
            stuck = {e.get("execution_id") for e in running.logs if e.get("execution_id")} - ended
            for entry in running.logs:
                if entry.get("execution_id") in stuck:
                    print("STUCK", entry)
            raise failures[0]

    begun = time.monotonic()
    asyncio.run(asyncio.wait_for(storm(), 90))
    wait_until(lambda: not marked_pids(value), 15)
    left = marked_pids(value)
    elapsed = time.monotonic() - begun

    health = wait_until(
        lambda: (
            (h := get_json(running.http_url + "/health"))["executions"]["live"] == 0
            and h["connections"] == 0
            and h
        ),
        10,
    )
    kinds = ", ".join(f"{k[8:]} {v}" for k, v in sorted(tally.items()) if k.startswith("session:"))
    print(
        f"\nstorm (seed {SEED}): {SESSIONS} sessions, {tally['actions']} actions "
        f"({kinds}), "
        f"{tally['executions']} executions, {len(seen)} processes started, "
        f"{len(left)} left, {elapsed:.1f}s"
    )
    assert not left, f"processes left behind: {left}"
    assert health, "server did not settle"
    assert running.proc.poll() is None
    assert wait_until(lambda: not zombie_children(running.pid), 3), zombie_children(running.pid)
    assert len(seen) >= 2 * tally["executions"]

    async def still_serves() -> None:
        async with ExecutorClient(running.url) as client:
            result = await client.run(argv=["echo", "after the storm"], env=marker)
            assert result.stdout == "after the storm\n"

    asyncio.run(asyncio.wait_for(still_serves(), 15))
