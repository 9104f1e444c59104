"""The durable store's two figures, measured against real servers.

1. End-to-end time of ``seq 1 1000000`` to a Python ``websockets`` client
   (connect to ``process.completed``) on a server with the store on and one
   with it off, runs alternating between the two; medians and their ratio
   (throughput with the store / without; the target is >= 0.8).
2. The time an ``attach {since_seq: 0}`` takes to replay 100 000 chunks from
   the store (request sent to ``process.completed`` received). The chunks are
   made by lines longer than ``max_line_bytes`` (64), each of which is cut and
   sent as a chunk of its own.

    .venv/bin/python -m stress.store_bench [--runs 5] [--chunks 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

from tests.utils import start_server


async def call(ws: Any, method: str, params: dict[str, Any]) -> None:
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    await ws.send(orjson.dumps(message).decode())


async def collect(ws: Any) -> tuple[int, int, int, dict[str, Any]]:
    """Read until ``process.completed``: lines, chunks, last seq, completed params."""
    lines = chunks = last_seq = 0
    while True:
        message = orjson.loads(await ws.recv())
        method = message.get("method")
        if method == "process.output":
            params = message["params"]
            lines += params["data"].count("\n") or 1
            chunks += 1
            last_seq = params["seq"]
        elif method == "process.completed":
            return lines, chunks, last_seq, message["params"]
        elif "error" in message:
            raise RuntimeError(message["error"])


async def seq_end_to_end(url: str, count: int) -> float:
    started = time.perf_counter()
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.recv()  # connected
        await call(ws, "execute", {"argv": ["seq", "1", str(count)]})
        lines, _, _, completed = await collect(ws)
    elapsed = time.perf_counter() - started
    if lines != count or completed["dropped"]:
        raise RuntimeError(f"lost output: {lines} lines, dropped {completed['dropped']}")
    return elapsed


async def replay_time(url: str, chunks: int, runs: int) -> tuple[list[float], int, float]:
    """Replay times; and the chunks the producing client saw live, and how long
    live delivery took (for comparison: the same frames over the same socket)."""
    script = f"import sys; sys.stdout.write(('x' * 100 + '\\n') * {chunks})"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.recv()
        started = time.perf_counter()
        await call(ws, "execute", {"argv": [sys.executable, "-c", script]})
        response = orjson.loads(await ws.recv())
        execution_id = response["result"]["execution_id"]
        _, live_chunks, _, _ = await collect(ws)
        live_s = time.perf_counter() - started
    times = []
    for _ in range(runs):
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            await ws.recv()
            started = time.perf_counter()
            await call(ws, "attach", {"execution_id": execution_id, "since_seq": 0})
            _, got, last_seq, _ = await collect(ws)
            times.append(time.perf_counter() - started)
            if got != chunks or last_seq != chunks:
                raise RuntimeError(f"replayed {got} chunks (last seq {last_seq}), not {chunks}")
    return times, live_chunks, live_s


async def measure(args: argparse.Namespace, on_url: str, off_url: str) -> None:
    on: list[float] = []
    off: list[float] = []
    for run in range(args.runs):
        # Alternate which goes first, so neither always gets the warmer machine.
        order = [(on, on_url), (off, off_url)]
        for figures, url in order if run % 2 == 0 else order[::-1]:
            figures.append(await seq_end_to_end(url, args.count))
    med_on, med_off = statistics.median(on), statistics.median(off)
    print(f"seq 1 {args.count} end to end, {args.runs} runs each, alternating")
    print(
        f"  store on : median {med_on:.3f} s  {args.count / med_on / 1e6:.2f} M lines/s  "
        f"runs {[round(x, 3) for x in on]}"
    )
    print(
        f"  store off: median {med_off:.3f} s  {args.count / med_off / 1e6:.2f} M lines/s  "
        f"runs {[round(x, 3) for x in off]}"
    )
    print(f"  throughput ratio on/off: {med_off / med_on:.2f} (target >= 0.8)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("on", "off", "replay"):
            (root / name).mkdir()
        # INFO, the default: the test harness's DEBUG logs every WebSocket frame.
        quiet = {"log_level": "INFO"}
        store_on = start_server(root / "on", quiet)
        store_off = start_server(root / "off", {**quiet, "store_enabled": "false"})
        replay = start_server(root / "replay", {**quiet, "max_line_bytes": 64})
        try:
            asyncio.run(measure(args, store_on.url, store_off.url))
            times, live, live_s = asyncio.run(replay_time(replay.url, args.chunks, 3))
            print(
                f"attach since_seq 0 replaying {args.chunks} chunks (64-byte cut lines): "
                f"median {statistics.median(times):.3f} s, "
                f"runs {[round(x, 3) for x in times]}, "
                f"{args.chunks / statistics.median(times) / 1000:.0f} k chunks/s"
            )
            print(
                f"  for comparison, live delivery of the same output: {live_s:.3f} s "
                f"({live} chunks received live)"
            )
        finally:
            for server in (store_on, store_off, replay):
                server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
