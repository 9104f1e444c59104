"""T02: back-pressure. A client that never reads while `yes` floods: the server's
RSS stays under 100 MB and another client still gets exact output promptly."""

from __future__ import annotations

import asyncio
import json
import time

import websockets
from common import arguments, check, http_json, passed, private_executor, rss_bytes

from service.client import ExecutorClient

FLOOD_S = 6.0
LIMIT_BYTES = 100 * 1024 * 1024


async def flood(url: str, pid: int) -> tuple[int, float, str]:
    peak = 0
    # max_queue=1: the client library stops reading the socket at once, so the
    # server sees a peer that does not read (TCP back-pressure), like a stuck browser.
    async with websockets.connect(url, max_queue=1, compression=None) as silent:
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "execute",
            "params": {"argv": ["yes", "flood"], "timeout": FLOOD_S},
        }
        await silent.send(json.dumps(request))
        started = time.monotonic()
        async with ExecutorClient(url) as other:
            await asyncio.sleep(1.0)  # the flood is on
            t0 = time.monotonic()
            result = await other.run(argv=["seq", "1", "20000"], wait_timeout=30)
            other_s = time.monotonic() - t0
            expected = "".join(f"{i}\n" for i in range(1, 20001))
            exact = (
                "exact" if result.stdout == expected and result.status == "completed" else "WRONG"
            )
            while time.monotonic() - started < FLOOD_S + 1:
                peak = max(peak, rss_bytes(pid))
                await asyncio.sleep(0.2)
    return peak, other_s, exact


def main() -> None:
    args = arguments(__doc__ or "")
    with private_executor() as executor:
        assert executor.proc is not None
        base = rss_bytes(executor.proc.pid)
        peak, other_s, exact = asyncio.run(flood(executor.url, executor.proc.pid))
        check(
            exact == "exact",
            f"the other client got seq 1 20000 exactly in {other_s:.2f} s",
            "the other client's output was wrong",
        )
        check(
            other_s < 5.0, "the other client was not slowed down (< 5 s)", f"took {other_s:.1f} s"
        )
        print(f"rss: start {base / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB", flush=True)
        check(
            peak < LIMIT_BYTES,
            f"server RSS peak {peak / 2**20:.1f} MB (start {base / 2**20:.1f} MB) under 100 MB",
            f"server RSS peaked at {peak / 2**20:.1f} MB",
        )
        status, _ = http_json(executor, "/healthz")
        check(status == 200, "the server is healthy after the flood", f"/healthz {status}")
    passed(args.marker)


if __name__ == "__main__":
    main()
