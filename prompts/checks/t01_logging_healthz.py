"""T01: JSON logging and the health routes of a real server."""

from __future__ import annotations

import asyncio
import json

from common import arguments, check, http_json, passed, private_executor

from service.client import ExecutorClient


async def one_execute(url: str) -> str:
    async with ExecutorClient(url) as client:
        result = await client.run(argv=["echo", "t01"], wait_timeout=20)
        check(result.stdout == "t01\n", "execute over WebSocket streams the output", result.stdout)
        return result.execution_id


def main() -> None:
    args = arguments(__doc__ or "")
    with private_executor() as executor:
        status, body = http_json(executor, "/healthz")
        check(
            status == 200 and body == {"status": "ok"},
            "GET /healthz -> 200 {status: ok}",
            f"/healthz answered {status} {body}",
        )
        status, body = http_json(executor, "/health")
        fields = {"status", "version", "uptime_s", "connections", "executions", "limits"}
        check(
            status == 200 and fields <= set(body),
            "GET /health has " + ", ".join(sorted(fields)),
            f"/health answered {status} {body}",
        )
        execution_id = asyncio.run(one_execute(executor.url))
        assert executor.proc is not None
        pid = executor.proc.pid
        code = executor.stop()
        # uvicorn re-raises the SIGTERM it handled once shut down: -15 is an orderly stop too.
        check(code in (0, -15), f"SIGTERM stops the server (exit {code})", f"exit code {code}")
        log_text = executor.log_path.read_text()
    entries = []
    for raw in log_text.splitlines():
        try:
            entries.append(json.loads(raw))
        except ValueError:
            check(False, "", f"a log line is not JSON: {raw[:200]}")
    check(len(entries) > 3, f"{len(entries)} log lines, every one JSON", "no log lines")
    keys = {"timestamp", "level", "logger", "message"}
    bare = [e for e in entries if not keys <= set(e)]
    check(
        not bare, "every line has timestamp, level, logger, message", f"lines lack keys: {bare[:2]}"
    )
    started = [
        e
        for e in entries
        if e.get("execution_id") == execution_id and "execute" in str(e.get("message"))
    ]
    check(
        bool(started),
        f"the execute is logged with its execution_id {execution_id}",
        "no log line names the execution",
    )
    messages = {e.get("message") for e in entries}
    check(
        {"listening", "stopped"} <= messages,
        f"server pid {pid} logged 'listening' and 'stopped'",
        "no 'listening' or 'stopped' line",
    )
    passed(args.marker)


if __name__ == "__main__":
    main()
