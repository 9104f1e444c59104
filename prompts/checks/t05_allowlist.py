"""T05: the allow-list. With CC_EXECUTOR_ALLOWED_COMMANDS=echo, echo runs and
everything else is refused with -32002 (other names, absolute paths outside the
list, a shell via argv, shell: true), the refusal is logged, and the connection
stays usable."""

from __future__ import annotations

import asyncio
import json

from common import arguments, check, passed, private_executor

from service.client import ExecutorClient
from service.errors import NotAllowed, RpcError

REFUSED = [
    {"argv": ["ls", "/"]},
    {"argv": ["/bin/sh", "-c", "echo pwned"]},
    {"command": "echo hi; touch /tmp/t05-should-not-exist", "shell": True},
    {"argv": ["python3", "-c", "print(1)"]},
]


async def scenario(url: str) -> list[str]:
    facts = []
    async with ExecutorClient(url) as client:
        result = await client.run(argv=["echo", "allowed"], wait_timeout=20)
        check(result.stdout == "allowed\n", "echo (on the list) runs", f"echo gave {result!r}")
        for params in REFUSED:
            try:
                await client.call("execute", params)
            except NotAllowed as exc:
                facts.append(f"refused -32002: {json.dumps(params)} ({exc.message})")
            except RpcError as exc:
                check(False, "", f"{params} got {exc.code} {exc.message}, not -32002")
            else:
                check(False, "", f"{params} was not refused")
        again = await client.run(argv=["echo", "still usable"], wait_timeout=20)
        check(
            again.stdout == "still usable\n",
            "the connection stays usable after refusals",
            "the connection broke",
        )
    return facts


def main() -> None:
    args = arguments(__doc__ or "")
    with private_executor({"CC_EXECUTOR_ALLOWED_COMMANDS": "echo"}) as executor:
        facts = asyncio.run(scenario(executor.url))
        executor.stop()
        log = executor.log_path.read_text()
    for fact in facts:
        check(True, fact, "")
    refusals = [line for line in log.splitlines() if '"refused"' in line]
    check(
        len(refusals) >= len(REFUSED),
        f"{len(refusals)} refusals logged",
        f"only {len(refusals)} refusals in the log",
    )
    passed(args.marker)


if __name__ == "__main__":
    main()
