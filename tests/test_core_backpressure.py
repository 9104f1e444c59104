"""Bounded memory: a client that never reads cannot grow the server, and
other clients do not slow down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import websockets

from service.client import ExecutorClient
from tests.utils import RunningServer, runner

run = runner(120)

MB = 1024 * 1024


def test_non_reading_client_during_yes_flood(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        # max_queue=1: once one frame is buffered this client stops reading the socket.
        stalled = await websockets.connect(server.url, max_queue=1, max_size=None)
        await stalled.send(
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "execute",
                    "params": {"argv": ["yes"], "env": marker},
                }
            ).decode()
        )
        samples = []
        try:
            async with ExecutorClient(server.url) as other:
                deadline = time.monotonic() + 8
                rounds = 0
                while time.monotonic() < deadline:
                    result = await other.run(
                        argv=["seq", "1", "20000"], env=marker, wait_timeout=20
                    )
                    # The other client gets everything, undelayed by the flood.
                    assert result.stdout == "".join(f"{i}\n" for i in range(1, 20001))
                    assert result.dropped == 0
                    samples.append(server.rss_bytes())
                    rounds += 1
                    await asyncio.sleep(0.2)
                assert rounds >= 5
        finally:
            # Cancel through the stalled connection: requests still get through.
            await stalled.send(
                orjson.dumps(
                    {"jsonrpc": "2.0", "id": 2, "method": "control", "params": {"type": "CANCEL"}}
                ).decode()
            )
            await asyncio.sleep(0.5)
            await stalled.close()
        peak = max(samples)
        assert peak < 100 * MB, f"server RSS {peak / MB:.1f} MB"
        # No growth with time: the last samples are not above the early ones by much.
        early = max(samples[: len(samples) // 2])
        late = max(samples[len(samples) // 2 :])
        assert late < early + 10 * MB, (early / MB, late / MB)

    run(main())


def test_dropped_chunks_are_counted_and_seq_shows_the_gap(
    make_server: Any, marker: dict[str, str]
) -> None:
    running = make_server({"max_pending_bytes": 65536})

    async def main() -> None:
        async with websockets.connect(running.url, max_queue=1, max_size=None) as ws:
            await ws.recv()
            await ws.send(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "execute",
                        "params": {"argv": ["seq", "1", "3000000"], "env": marker},
                    }
                ).decode()
            )
            await asyncio.sleep(3)  # read nothing while the command runs to its end
            seqs = []
            lines = 0
            while True:
                message = orjson.loads(await ws.recv())
                if message.get("method") == "process.output":
                    seqs.append(message["params"]["seq"])
                    lines += message["params"]["data"].count("\n")
                elif message.get("method") == "process.completed":
                    completed = message["params"]
                    break
            assert completed["status"] == "completed"
            assert completed["dropped"] > 0
            assert lines < 3000000
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            highest = seqs[-1] if seqs else 0
            # Every seq either arrived or was counted as dropped.
            assert len(seqs) + completed["dropped"] >= highest
            assert completed["stdout_bytes"] == sum(len(f"{i}\n") for i in range(1, 3000001))

    run(main())
