"""Shared helpers of the prompts' verification commands (``prompts/checks/``).

Each check is a script run through the executor by ``cc-executor prompts run``
with ``--marker MARKER``. It prints what it verified, one fact per line, and
prints the marker as its very last line only when every check passed; any
failed check prints ``FAILED: why`` and exits 1 before the marker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from service.prompts.executor import LocalExecutor  # noqa: E402


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--marker", required=True, help="printed last, only on success")
    return parser.parse_args()


def fail(why: str) -> NoReturn:
    print(f"FAILED: {why}", flush=True)
    sys.exit(1)


def check(condition: bool, fact: str, why: str) -> None:
    """Print ``fact`` when ``condition`` holds, else fail with ``why``."""
    if not condition:
        fail(why)
    print(f"ok: {fact}", flush=True)


def passed(marker: str) -> None:
    print("all checks passed", flush=True)
    print(marker, flush=True)


@contextlib.contextmanager
def private_executor(env: dict[str, str] | None = None) -> Iterator[LocalExecutor]:
    """A fresh ``cc-executor serve`` on a free loopback port with its own data dir."""
    with tempfile.TemporaryDirectory(prefix="prompt-check-") as tmp:
        executor = LocalExecutor(Path(tmp), env={"CC_EXECUTOR_KILL_GRACE_S": "2", **(env or {})})
        executor.start()
        try:
            yield executor
        finally:
            executor.stop()


def http_json(executor: LocalExecutor, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{executor.port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
