"""Memory of a *warmed* server under the seed's T02 flood.

Starts ``cc-executor serve`` on a free port, warms it the way a used server
is warm (one MCP ``initialize`` on ``/mcp``, which loads the MCP SDK), then
runs ``yes | pv -qL RATE`` twice for ``--seconds``: one client never reads
its socket, one reads slowly. The server's RSS is sampled every 0.25 s from
``/proc``; the figures printed are idle, warmed, the peak, and the peaks of
the first and last thirds of the flood (flat: within 10 MB of each other).

    .venv/bin/python -m stress.warm_flood --seconds 30
    .venv/bin/python -m stress.warm_flood --seconds 30 --no-warm
    .venv/bin/python -m stress.warm_flood --tracemalloc   # + top allocations
    .venv/bin/python -m stress.warm_flood --maps          # + what the warm-up added, by mapping

With ``--tracemalloc`` the server runs under ``PYTHONTRACEMALLOC=1`` and the
script asks it for its top allocations (SIGUSR2, logged by
:mod:`service.memory`) at the peak of the flood; tracing slows the server and
adds its own memory, so those runs show *where*, not *how much*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from service.client.launch import run_server

MB = 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def mappings(pid: int) -> dict[str, int]:
    """Resident bytes per mapping of ``/proc/PID/smaps``: each shared library
    (its file name), ``[heap]``, and ``[anon]`` for every anonymous one
    (pymalloc's arenas, thread stacks, large allocations)."""
    found: dict[str, int] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as handle:
        for line in handle:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                name = Path(fields[5]).name if len(fields) > 5 else "[anon]"
            elif fields and fields[0] == "Rss:":
                found[name] = found.get(name, 0) + int(fields[1]) * 1024
    return found


def grown(before: dict[str, int], after: dict[str, int], top: int = 8) -> dict[str, float]:
    """The mappings that grew most between two :func:`mappings`, in MB."""
    deltas = {name: after[name] - before.get(name, 0) for name in after}
    largest = sorted(deltas.items(), key=lambda item: -item[1])[:top]
    return {name: round(delta / MB, 1) for name, delta in largest if delta > 0}


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
        full.update({"CC_EXECUTOR_DATA_DIR": str(data_dir), "CC_EXECUTOR_LOG_LEVEL": "INFO"})
        full.update(env)
        self.lines: list[dict[str, Any]] = []

        def keep(line: str) -> None:
            try:
                entry = json.loads(line)
            except ValueError:
                return
            if isinstance(entry, dict):
                self.lines.append(entry)

        self._server = run_server(full, on_line=keep, timeout_s=60)
        self.proc = self._server.proc
        self.port = self._server.port

    def stop(self) -> None:
        self._server.stop(timeout_s=30)


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return dict(json.load(response)["store"])


def mcp_initialize(port: int) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-03-26",
                "capabilities": {},
                "clientInfo": {"name": "warm-flood", "version": "1"},
            },
        }
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


async def flood_client(port: int, seconds: float, rate: int, read_every_s: float | None) -> None:
    """One execution of the flood; read every ``read_every_s`` (None: never)."""
    url = f"ws://127.0.0.1:{port}/ws/mcp"
    async with connect(url, max_size=None, max_queue=4) as ws:
        await ws.recv()
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "execute",
            "params": {"argv": ["sh", "-c", f"yes | pv -qL {rate}"], "timeout": seconds},
        }
        await ws.send(json.dumps(request))
        deadline = time.monotonic() + seconds + 5
        while time.monotonic() < deadline:
            if read_every_s is None:
                await asyncio.sleep(0.5)
                continue
            try:
                await asyncio.wait_for(ws.recv(), 1)
            except TimeoutError:
                pass
            await asyncio.sleep(read_every_s)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(item.split("=", 1) for item in args.env)
    if args.tracemalloc:
        env["PYTHONTRACEMALLOC"] = "1"
    with tempfile.TemporaryDirectory(prefix="warm-flood-") as scratch:
        server = Server(Path(scratch), env)
        try:
            await asyncio.sleep(1)
            idle = rss(server.proc.pid)
            idle_maps = mappings(server.proc.pid)
            if args.warm:
                mcp_initialize(server.port)
                await asyncio.sleep(1)
            warmed = rss(server.proc.pid)
            warmed_maps = mappings(server.proc.pid)
            samples: list[int] = []
            clients = asyncio.gather(
                flood_client(server.port, args.seconds, args.rate, None),
                flood_client(server.port, args.seconds, args.rate, args.slow_read_s),
            )
            start = time.monotonic()
            dumped = False
            timeline: list[dict[str, Any]] = []
            while time.monotonic() - start < args.seconds:
                samples.append(rss(server.proc.pid))
                if args.timeline and len(samples) % 8 == 0:
                    server.proc.send_signal(signal.SIGUSR2)
                    store = await asyncio.to_thread(health, server.port)
                    timeline.append(
                        {
                            "t_s": round(time.monotonic() - start, 1),
                            "rss_mb": round(samples[-1] / MB, 1),
                            "store_backlog_bytes": store.get("backlog_bytes"),
                        }
                    )
                if args.tracemalloc and not dumped and time.monotonic() - start > args.seconds / 2:
                    server.proc.send_signal(signal.SIGUSR2)
                    dumped = True
                await asyncio.sleep(0.25)
            clients.cancel()
            try:
                await clients
            except (asyncio.CancelledError, Exception):
                pass
            third = max(1, len(samples) // 3)
            figures: dict[str, Any] = {
                "warm": args.warm,
                "seconds": args.seconds,
                "rate": args.rate,
                "idle_mb": round(idle / MB, 1),
                "warmed_mb": round(warmed / MB, 1),
                "peak_mb": round(max(samples) / MB, 1),
                "first_third_peak_mb": round(max(samples[:third]) / MB, 1),
                "last_third_peak_mb": round(max(samples[-third:]) / MB, 1),
            }
            figures["flat"] = (
                abs(figures["last_third_peak_mb"] - figures["first_third_peak_mb"]) <= 10
            )
            if args.maps:
                figures["warm_up_grew_mb"] = grown(idle_maps, warmed_maps)
                figures["flood_grew_mb"] = grown(warmed_maps, mappings(server.proc.pid))
            if args.timeline:
                await asyncio.sleep(1)
                memory = [e for e in server.lines if e.get("message") == "memory"]
                for point, entry in zip(timeline, memory, strict=False):
                    point.update(
                        {
                            k.replace("_bytes", "_mb"): round(v / MB, 1)
                            for k, v in entry.items()
                            if k.startswith(("malloc", "Rss"))
                        }
                    )
                figures["timeline"] = timeline
            if args.tracemalloc:
                await asyncio.sleep(1)
                figures["tracemalloc_top"] = [
                    e for e in server.lines if e.get("message") == "tracemalloc top"
                ]
            return figures
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=50000, help="pv -L bytes per second")
    parser.add_argument("--slow-read-s", type=float, default=0.05, help="the slow reader's pause")
    parser.add_argument("--no-warm", dest="warm", action="store_false")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--maps", action="store_true", help="what the warm-up and the flood added, by mapping"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument(
        "--timeline", action="store_true", help="every 2 s: allocator figures and store backlog"
    )
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
