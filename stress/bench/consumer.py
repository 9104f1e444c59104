"""The streaming side of the PAUSE benchmark, in a process of its own.

``python -m stress.bench.consumer URL COUNT ENV_JSON ARGV...`` opens one
connection, starts COUNT executions of ARGV, prints one JSON line
``{"executions": [{"execution_id", "pgid"}, ...]}``, then reads all their
output as fast as it can. When its stdin closes it cancels them, waits for
every ``process.completed`` and prints ``{"lines", "frames", "dropped"}``.

It runs apart from the process that times PAUSE so that the timing client's
event loop is not the one busy decoding the output of every stream.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from service.client import ExecutorClient, RemoteExecution


async def consume(url: str, count: int, env: dict[str, str], argv: list[str]) -> dict[str, Any]:
    totals = {"lines": 0, "frames": 0, "dropped": 0}
    async with ExecutorClient(url) as client:
        runs = [await client.execute(argv=argv, env=env) for _ in range(count)]

        async def drain(run: RemoteExecution) -> None:
            async for message in run.events():
                params = message["params"]
                if message["method"] == "process.output":
                    totals["frames"] += 1
                    totals["lines"] += params["data"].count("\n")
                elif message["method"] == "process.completed":
                    totals["dropped"] += int(params.get("dropped", 0))

        drains = [asyncio.create_task(drain(run)) for run in runs]
        listing = [{"execution_id": run.id, "pgid": run.pgid} for run in runs]
        print(json.dumps({"executions": listing}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
        await asyncio.gather(*(run.cancel() for run in runs), return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*drains), 60)
    return totals


def main() -> int:
    url, count, env_json, *argv = sys.argv[1:]
    totals = asyncio.run(consume(url, int(count), json.loads(env_json), argv))
    print(json.dumps(totals), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
