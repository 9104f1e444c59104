"""How ``cc-executor prompts`` reaches an executor and a store.

- :func:`executor_client`: ``--url``; else the server the settings name, when
  one answers; else a private executor on a free loopback port with the data
  directory (never beside a server that refused us; and never on a data
  directory another server holds: the store's lock makes the private one exit,
  and its error is reported).
- :func:`record_source`: the store to cross-check the evidence against, read
  through the wire: ``--url``, else a private executor on the data directory.
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
from service.prompts.source import RecordSource, ServerSource


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
    local = LocalExecutor(directory, env=env)
    try:
        url = await asyncio.to_thread(local.start)
    except ExecutorStartError as exc:
        if exc.reason is None:
            raise CommandError(str(exc)) from None
        # One line, the server's own: "the data directory ... is in use by another
        # cc-executor (pid N)" is the usual one, and that server's --url is the answer.
        raise CommandError(
            f"the private executor on {directory} did not start: {exc.reason} "
            f"(its log: {local.log_path}; pass --url to use a running server)"
        ) from None
    print(f"started a private executor at {url} (data dir {local.data_dir})", file=sys.stderr)
    try:
        async with ExecutorClient(url, token(args), max_frame_bytes=None) as client:
            yield client
    finally:
        await asyncio.to_thread(local.stop)


@contextlib.asynccontextmanager
async def record_source(args: argparse.Namespace) -> AsyncIterator[RecordSource]:
    """``--url``, else a private executor on ``--data-dir`` (which must exist:
    an audit creates no store where no run was ever recorded)."""
    if not args.url:
        directory = data_dir(args)
        if not directory.is_dir():
            raise CommandError(f"no data directory at {directory} (no run was ever recorded there)")
    async with executor_client(args) as client:
        yield ServerSource(client)
