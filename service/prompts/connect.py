"""How ``cc-executor prompts`` reaches an executor and a store.

- :func:`executor_client`: ``--url``; else the server the settings name, when
  one answers; else a private executor on a free loopback port with the data
  directory (never beside a server that refused us, nor on a store with live
  executions).
- :func:`record_source`: the store to cross-check the evidence against:
  ``--url``, else the store file in the data directory, opened read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from service.client import ConnectionLost, ExecutorClient
from service.client.commands import CommandError
from service.prompts.executor import ExecutorStartError, LocalExecutor
from service.prompts.source import FileSource, RecordSource, ServerSource


def settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from service.settings import Settings
    from service.settings_errors import describe_error

    try:
        return Settings()
    except ValidationError as exc:
        raise CommandError(describe_error(exc)) from None


def data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return Path(settings(args).data_dir)


def token(args: argparse.Namespace) -> str | None:
    """``--token``, else the settings' token (``CC_EXECUTOR_TOKEN`` or ``_TOKEN_FILE``)."""
    if args.token:
        return str(args.token)
    try:
        token: str | None = settings(args).resolved_token()
    except OSError as exc:
        raise CommandError(f"cannot read the token file: {exc}") from None
    return token


def live_executions(data_dir: Path) -> int:
    """Executions the store in ``data_dir`` marks live (read-only; 0 when none or no store)."""
    import sqlite3

    from service.store.database import DB_NAME

    path = data_dir / DB_NAME
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            row = conn.execute(
                "SELECT count(*) FROM executions WHERE state IN ('starting', 'running', 'paused')"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # no executions table yet, or a damaged file the server will move aside
    return int(row[0])


@contextlib.asynccontextmanager
async def executor_client(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> AsyncIterator[ExecutorClient]:
    """A connected client: ``--url``, else the configured server if it answers,
    else a private executor (stopped on exit; ``env`` adds to its settings)."""
    if args.url:
        urls = [args.url]
    elif args.data_dir is None:
        configured = settings(args)
        urls = [f"ws://{configured.host}:{configured.port}/ws/mcp"]
    else:
        urls = []
    for url in urls:
        client = ExecutorClient(url, token(args), open_timeout_s=10.0, max_frame_bytes=None)
        try:
            await client.connect()
        except OSError as exc:
            if args.url:
                raise CommandError(f"cannot connect to {url}: {exc}") from None
            continue  # nothing listens there: start a private executor below
        except (ConnectionLost, TimeoutError, websockets.InvalidHandshake) as exc:
            # Something answers but refuses us (a token, an Origin): never start a
            # second server beside it on what may be the same data directory.
            raise CommandError(f"the executor at {url} refused the connection: {exc}") from None
        try:
            yield client
        finally:
            await client.close()
        return
    directory = data_dir(args)
    live = await asyncio.to_thread(live_executions, directory)
    if live:
        raise CommandError(
            f"the store in {directory} has {live} live executions: a server is using it. "
            "Pass its --url, or another --data-dir (a second server would treat them as "
            "leftovers of a crash and end them)"
        )
    local = LocalExecutor(directory, env=env)
    try:
        url = await asyncio.to_thread(local.start)
    except ExecutorStartError as exc:
        raise CommandError(str(exc)) from None
    print(f"started a private executor at {url} (data dir {local.data_dir})", file=sys.stderr)
    try:
        async with ExecutorClient(url, token(args), max_frame_bytes=None) as client:
            yield client
    finally:
        await asyncio.to_thread(local.stop)


@contextlib.asynccontextmanager
async def record_source(args: argparse.Namespace) -> AsyncIterator[RecordSource]:
    if args.url:
        async with executor_client(args) as client:
            yield ServerSource(client)
        return
    from service.store.database import DB_NAME

    yield FileSource(data_dir(args) / DB_NAME)
