from __future__ import annotations

import asyncio

from service.client import ExecutorClient
from tests.utils import RunningServer


def test_execute_roundtrip(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            result = await client.run(argv=["sh", "-c", "echo out; echo err >&2"], env=marker)
            assert result.stdout == "out\n"
            assert result.stderr == "err\n"
            assert result.status == "completed"

    asyncio.run(main())
