"""T03: the stress scenario, short: three concurrent sessions PAUSE, RESUME and
CANCEL a process tree; every step is verified in /proc; no orphan is left.
(The full Locust version is `make stress-t03`.)"""

from __future__ import annotations

import asyncio
import time
import uuid

from common import arguments, check, passed, private_executor

from service.client import ExecutorClient
from service.process import procfs

SESSIONS = 3
JOB = "(while :; do echo child; sleep 0.05; done) & while :; do echo parent; sleep 0.05; done"


async def output_within(queue_events: asyncio.Queue[str], seconds: float) -> int:
    count = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(queue_events.get(), left)
            count += 1
        except TimeoutError:
            break
    return count


async def session(url: str, env: dict[str, str], index: int) -> list[str]:
    failures: list[str] = []
    async with ExecutorClient(url) as client:
        run = await client.execute(argv=["sh", "-c", JOB], env=env, timeout=60)
        lines: asyncio.Queue[str] = asyncio.Queue()
        done = asyncio.Event()
        completed: dict[str, object] = {}

        async def pump() -> None:
            async for event in run.events():
                if event["method"] == "process.output":
                    lines.put_nowait(event["params"]["data"])
                elif event["method"] == "process.completed":
                    completed.update(event["params"])
            done.set()

        reader = asyncio.create_task(pump())
        try:
            if await output_within(lines, 1.0) == 0:
                failures.append(f"session {index}: no output before PAUSE")
            await run.pause()
            stopped, members = procfs.group_stopped(run.pgid or 0)
            if not stopped or members < 2:
                failures.append(f"session {index}: group not all stopped ({members} members)")
            while not lines.empty():
                lines.get_nowait()  # output produced before the stop
            if await output_within(lines, 0.5):
                failures.append(f"session {index}: output while paused")
            await run.resume()
            if await output_within(lines, 2.0) == 0:
                failures.append(f"session {index}: no output after RESUME")
            await run.cancel()
            await asyncio.wait_for(done.wait(), 20)
            if completed.get("status") != "cancelled":
                failures.append(f"session {index}: completed {completed.get('status')}")
            if procfs.group_members(run.pgid or 0):
                failures.append(f"session {index}: group {run.pgid} still alive after CANCEL")
        finally:
            reader.cancel()
    return failures


async def scenario(url: str, env: dict[str, str]) -> list[str]:
    results = await asyncio.gather(*(session(url, env, i) for i in range(SESSIONS)))
    return [failure for failures in results for failure in failures]


def main() -> None:
    args = arguments(__doc__ or "")
    orphan_mark = f"T03_RUN={uuid.uuid4().hex}"
    name, value = orphan_mark.split("=")
    with private_executor({"CC_EXECUTOR_PASS_ENV": '["PATH", "HOME", "LANG", "T03_RUN"]'}) as ex:
        started = time.monotonic()
        failures = asyncio.run(scenario(ex.url, {name: value}))
        elapsed = time.monotonic() - started
    for failure in failures:
        print(f"failure: {failure}")
    check(
        not failures,
        f"{SESSIONS} sessions: PAUSE (group stopped, silent), RESUME (output), "
        f"CANCEL (cancelled, group gone) in {elapsed:.1f} s",
        f"{len(failures)} failures",
    )
    orphans = procfs.pids_with_env(orphan_mark.encode())
    check(not orphans, "no orphan process carries this run's marker", f"orphans: {orphans}")
    passed(args.marker)


if __name__ == "__main__":
    main()
