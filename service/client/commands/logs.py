"""``cc-executor logs ID``: print an execution's stored transcript.

Pages through ``transcript.get`` (the store) from ``--since``; stdout chunks go
to stdout and stderr chunks to stderr, as ``run`` would have written them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any

from service import errors
from service.client import ExecutorClient
from service.client.commands import (
    CommandError,
    add_connection_options,
    build_client,
    connect,
    registered,
    report,
    run_command,
)

PAGE_CHUNKS = 1000


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if registered(subparsers, "logs"):
        return
    logs = subparsers.add_parser("logs", help="print an execution's stored transcript")
    logs.add_argument("execution_id", metavar="ID")
    logs.add_argument("--since", type=int, default=0, metavar="SEQ", help="after this seq")
    add_connection_options(logs)


def run(args: argparse.Namespace) -> int:
    return run_command(lambda: logs_main(args))


def page_chunks(page: Any) -> list[dict[str, Any]]:
    if isinstance(page, dict):
        chunks = page.get("chunks")
        return list(chunks) if isinstance(chunks, list) else []
    return list(page) if isinstance(page, list) else []


async def transcript(
    client: ExecutorClient, execution_id: str, since_seq: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Yield every stored chunk of ``execution_id`` after ``since_seq``, page by
    page (``transcript.get``; MethodNotFound on a server without the store)."""
    since = since_seq
    while True:
        page = await client.call(
            "transcript.get",
            {"execution_id": execution_id, "since_seq": since, "limit": PAGE_CHUNKS},
        )
        chunks = page_chunks(page)
        for chunk in chunks:
            yield chunk
        seqs = [int(chunk["seq"]) for chunk in chunks if "seq" in chunk]
        more = page.get("more") if isinstance(page, dict) else None
        if not seqs or more is False or (more is None and len(chunks) < PAGE_CHUNKS):
            if isinstance(page, dict) and page.get("transcript_capped"):
                report(
                    f"transcript capped: {page.get('unstored_chunks')} later chunks "
                    f"({page.get('unstored_bytes')} bytes) were not stored"
                )
            return
        since = max(seqs)


async def logs_main(args: argparse.Namespace) -> int:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    async with await connect(build_client(args)) as client:
        try:
            async for chunk in transcript(client, args.execution_id, args.since):
                stream = chunk.get("stream") or chunk.get("type") or "stdout"
                target = err if stream == "stderr" else out
                target.write(str(chunk.get("data", "")).encode("utf-8", "surrogateescape"))
                target.flush()
        except errors.MethodNotFound:
            raise CommandError("this server keeps no transcripts (no transcript.get)") from None
        try:
            info = await client.call("status", {"execution_id": args.execution_id})
        except errors.RpcError:
            return 0
    if isinstance(info, dict) and info.get("state") in ("running", "paused", "starting"):
        report(f"{args.execution_id} is still {info['state']}: use attach to follow it")
    return 0
