"""The executor core's two figures, measured against a real server.

1. End-to-end time of ``seq 1 1000000`` to a Python ``websockets`` client
   (connect to the last line received), median of several runs.
2. Peak server RSS while ``yes`` floods a client that never reads, sampled
   every 0.5 s for ``--seconds`` (default 60), beside the RSS at start.

    .venv/bin/python -m stress.core_figures [--seconds 60] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import websockets

from tests.utils import start_server


async def seq_end_to_end(url: str, count: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.recv()
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "execute",
            "params": {"argv": ["seq", "1", str(count)]},
        }
        await ws.send(orjson.dumps(request).decode())
        lines = 0
        while True:
            message = orjson.loads(await ws.recv())
            method = message.get("method")
            if method == "process.output":
                lines += message["params"]["data"].count("\n")
            elif method == "process.completed":
                return time.perf_counter() - started, lines, message["params"]["dropped"]


async def flood_rss(server_rss: object, url: str, seconds: float) -> tuple[int, int, list[int]]:
    # No keepalive on either side: a client that reads nothing for a minute would
    # otherwise be declared dead by the pings, which is right in production.
    stalled = await websockets.connect(url, max_queue=1, max_size=None, ping_interval=None)
    await stalled.send(
        orjson.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"argv": ["yes"]}}
        ).decode()
    )
    samples = []
    start_rss = server_rss()  # type: ignore[operator]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        samples.append(server_rss())  # type: ignore[operator]
    await stalled.send(
        orjson.dumps(
            {"jsonrpc": "2.0", "id": 2, "method": "control", "params": {"type": "CANCEL"}}
        ).decode()
    )
    await asyncio.sleep(0.5)
    await stalled.close()
    return start_rss, max(samples), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(Path(data_dir), {"log_level": "INFO", "ws_ping_interval_s": 3600})
        try:
            times = []
            for _ in range(args.runs):
                elapsed, lines, dropped = asyncio.run(seq_end_to_end(server.url, args.lines))
                times.append(elapsed)
                print(f"seq 1 {args.lines}: {elapsed:.3f} s, {lines} lines, {dropped} dropped")
            print(
                f"seq 1 {args.lines} end to end: median {statistics.median(times):.3f} s "
                f"({args.lines / statistics.median(times):,.0f} lines/s)"
            )
            start, peak, samples = asyncio.run(
                flood_rss(server.rss_bytes, server.url, args.seconds)
            )
            mb = 1024 * 1024
            print(
                f"yes flood, non-reading client, {args.seconds:.0f} s: RSS at start "
                f"{start / mb:.1f} MB, peak {peak / mb:.1f} MB, last {samples[-1] / mb:.1f} MB, "
                f"first-half peak {max(samples[: len(samples) // 2]) / mb:.1f} MB"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
