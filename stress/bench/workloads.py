"""The clients that drive each server, one coroutine per workload and side.

websocketd is driven with a bare ``websockets`` connection (one text message
per line, the connection closes when the process exits). cc-executor is
driven with the project's own :class:`~service.client.ExecutorClient`, which
is itself a ``websockets`` client. Every result says what was delivered and
what was not: lines counted at the client, and for cc-executor the chunks the
server ``dropped`` for a client slower than the pipe (by design: the outbox
is bounded; ``attach`` would replay them from the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import websockets

from service.client import ExecutorClient
from stress.bench.servers import child_pids, cpu_seconds, process_state, rss_bytes

now = time.perf_counter


def _connect(url: str) -> Any:
    # websocketd answers a close frame only once its child is gone: do not
    # wait the default 10 s for it when the bench hangs up on `yes`. No
    # keepalive pings: a pong behind a minute of one-line messages can miss
    # its 20 s deadline and the client would drop a healthy connection.
    return websockets.connect(
        url,
        compression=None,
        max_size=None,
        open_timeout=30,
        close_timeout=1,
        ping_interval=None,
    )


# --- 1. seq 1 N --------------------------------------------------------------


async def wsd_seq(url: str, lines: int, server_pid: int) -> dict[str, Any]:
    """Connect, receive every message until websocketd closes; time to the last."""
    cpu0 = cpu_seconds(server_pid)
    start = now()
    count = 0
    last = ""
    last_at = start
    async with _connect(url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                count += 1
                last = str(message)
                last_at = now()
    return {
        "seconds": last_at - start,
        "lines": count,
        "complete": count == lines and last == str(lines),
        "server_cpu_s": cpu_seconds(server_pid) - cpu0,
    }


async def cc_seq(url: str, lines: int, server_pid: int, env: Mapping[str, str]) -> dict[str, Any]:
    """Connect, execute ``seq 1 N``, count lines until ``process.completed``."""
    cpu0 = cpu_seconds(server_pid)
    start = now()
    count = 0
    tail = ""
    last_at = start
    completed: dict[str, Any] = {}
    async with ExecutorClient(url) as client:
        run = await client.execute(argv=["seq", "1", str(lines)], env=dict(env))
        async for message in run.events():
            params = message["params"]
            if message["method"] == "process.output":
                data = params["data"]
                count += data.count("\n")
                tail = data[-24:]
                last_at = now()
            elif message["method"] == "process.completed":
                completed = params
    return {
        "seconds": last_at - start,
        "lines": count,
        "dropped_chunks": completed.get("dropped", 0),
        "complete": count == lines and tail.endswith(f"\n{lines}\n"),
        "server_cpu_s": cpu_seconds(server_pid) - cpu0,
    }


# --- 2. yes for S seconds -------------------------------------------------------


async def wsd_yes(url: str, seconds: float, server_pid: int) -> dict[str, Any]:
    """Read ``yes`` lines as fast as possible for ``seconds``, then disconnect."""
    cpu0 = cpu_seconds(server_pid)
    start = now()
    deadline = start + seconds
    count = 0
    async with _connect(url) as ws:
        async for _message in ws:
            count += 1
            if now() >= deadline:
                break
        window = now() - start
        cpu = cpu_seconds(server_pid) - cpu0
    return {"seconds": window, "lines": count, "server_cpu_s": cpu}


async def cc_yes(
    url: str, seconds: float, server_pid: int, env: Mapping[str, str]
) -> dict[str, Any]:
    """Execute ``yes``, read for ``seconds``, CANCEL, and collect the drop count."""
    cpu0 = cpu_seconds(server_pid)
    start = now()
    deadline = start + seconds
    count = 0
    window = cpu = 0.0
    completed: dict[str, Any] = {}
    async with ExecutorClient(url) as client:
        run = await client.execute(argv=["yes"], env=dict(env))
        events = run.events()
        async for message in events:
            if message["method"] == "process.output":
                count += message["params"]["data"].count("\n")
            if now() >= deadline:
                break
        window = now() - start
        cpu = cpu_seconds(server_pid) - cpu0
        await run.cancel()
        async for message in events:
            if message["method"] == "process.completed":
                completed = message["params"]
    stdout_bytes = int(completed.get("stdout_bytes", 0))
    return {
        "seconds": window,
        "lines": count,
        "server_cpu_s": cpu,
        "dropped_chunks": completed.get("dropped", 0),
        # Every "y\n" the server read, delivered or not (read until the CANCEL).
        "lines_read": stdout_bytes // 2,
    }


# --- 3. short executions of true --------------------------------------------------


async def _wsd_once(url: str) -> None:
    async with _connect(url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _message in ws:
                pass


async def wsd_true(url: str, runs: int, concurrent: bool) -> dict[str, Any]:
    """``runs`` connections to websocketd running ``true``, in turn or all at once."""
    start = now()
    if concurrent:
        await asyncio.gather(*(_wsd_once(url) for _ in range(runs)))
    else:
        for _ in range(runs):
            await _wsd_once(url)
    return {"seconds": now() - start, "runs": runs}


async def cc_true(url: str, runs: int, concurrent: bool, env: Mapping[str, str]) -> dict[str, Any]:
    """One connection; ``runs`` executions of ``true``, in turn or all at once.
    Each counts once its ``process.completed`` arrived."""
    start = now()
    statuses: list[str] = []
    async with ExecutorClient(url) as client:

        async def once() -> None:
            result = await client.run(argv=["true"], env=dict(env))
            statuses.append(result.status)

        if concurrent:
            await asyncio.gather(*(once() for _ in range(runs)))
        else:
            for _ in range(runs):
                await once()
    return {
        "seconds": now() - start,
        "runs": runs,
        "completed": statuses.count("completed"),
    }


# --- 4. PAUSE latency ---------------------------------------------------------------


def group_all_stopped(pgid: int, pids: Sequence[int]) -> bool:
    """Whether the leader and its known descendants are all in state ``T``."""
    return all(process_state(pid) in ("T", "t", "") for pid in (pgid, *pids))


async def cc_pause(
    url: str,
    server_pid: int,
    executions: int,
    samples: int,
    argv: Sequence[str],
    env: Mapping[str, str],
    warmup_s: float = 1.0,
) -> dict[str, Any]:
    """``executions`` streaming executions, whose output a separate consumer
    process reads (:mod:`stress.bench.consumer`); PAUSE them one at a time
    (round robin) from a control connection of this process while all the
    others stream, time each from the request to its result (which, by the
    contract, comes once every process of the group is in state T: checked
    here in /proc), then RESUME. A ``status`` round trip after each sample
    shows what the load alone costs a request."""
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stress.bench.consumer",
        url,
        str(executions),
        json.dumps(dict(env)),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert consumer.stdin is not None and consumer.stdout is not None
    latencies: list[float] = []
    round_trips: list[float] = []
    not_stopped = 0
    try:
        listing = json.loads(await asyncio.wait_for(consumer.stdout.readline(), 120))
        targets = [(item["execution_id"], item["pgid"]) for item in listing["executions"]]
        async with ExecutorClient(url) as client:
            await asyncio.sleep(warmup_s)
            started = now()
            cpu0 = cpu_seconds(server_pid)
            for index in range(samples):
                execution_id, pgid = targets[index % len(targets)]
                descendants = child_pids(pgid)
                sent = now()
                await client.call("control", {"type": "PAUSE", "execution_id": execution_id})
                latencies.append(now() - sent)
                if not group_all_stopped(pgid, descendants):
                    not_stopped += 1
                await client.call("control", {"type": "RESUME", "execution_id": execution_id})
                sent = now()
                await client.call("status", {"execution_id": execution_id})
                round_trips.append(now() - sent)
            elapsed = now() - started
            cpu = cpu_seconds(server_pid) - cpu0
        consumer.stdin.close()
        totals = json.loads(await asyncio.wait_for(consumer.stdout.readline(), 90))
        await consumer.wait()
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
    return {
        "latencies_s": latencies,
        "status_round_trips_s": round_trips,
        "not_stopped": not_stopped,
        "seconds": elapsed,
        # Share of one core the server used while the samples were taken.
        "server_cpu_share": cpu / elapsed if elapsed else 0.0,
        **totals,
    }


# --- 5. idle connections --------------------------------------------------------------


async def idle_connections(
    url: str, count: int, server_pid: int, wait_first_frame: bool, concurrency: int = 50
) -> dict[str, Any]:
    """Open ``count`` connections (``concurrency`` handshakes at a time) and
    hold them; the server's RSS growth per connection, with its children's
    (websocketd runs a process per connection) counted separately.

    For cc-executor a connection counts as open once its ``connected``
    notification arrived (``wait_first_frame``)."""
    gate = asyncio.Semaphore(concurrency)
    sockets: list[Any] = []
    rss0 = rss_bytes(server_pid)
    children0 = sum(rss_bytes(pid) for pid in child_pids(server_pid))

    async def open_one() -> None:
        async with gate:
            ws = await _connect(url)
            sockets.append(ws)
            if wait_first_frame:
                await ws.recv()

    start = now()
    try:
        await asyncio.gather(*(open_one() for _ in range(count)))
        open_s = now() - start
        await asyncio.sleep(1.0)  # let the server settle (websocketd forks)
        rss1 = rss_bytes(server_pid)
        children = child_pids(server_pid)
        children1 = sum(rss_bytes(pid) for pid in children)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "connections": len(sockets),
        "open_s": open_s,
        "server_rss_before": rss0,
        "server_rss_after": rss1,
        "children": len(children),
        "children_rss": children1 - children0,
        "rss_per_connection": (rss1 - rss0) / max(1, len(sockets)),
        "rss_per_connection_with_children": (rss1 - rss0 + children1 - children0)
        / max(1, len(sockets)),
    }
