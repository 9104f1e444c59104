"""The client subcommands of ``cc-executor``: run, attach, ps, pause, resume,
cancel, logs and agent.

Each module registers its subcommands in :data:`service.cli.SUBCOMMANDS` and
drives the server through the one :class:`~service.client.ExecutorClient`.
What they share lives here: the ``--url``/``--token`` options (defaults from
``CC_EXECUTOR_URL`` and ``CC_EXECUTOR_TOKEN``), opening the client, and
turning every failure into one line on stderr and an exit status:

=====  ==============================================================
0      success (``run``/``attach``: the remote command's own status)
1      the server refused the request (its message is printed)
2      bad usage
124    ``run``: the command timed out (as GNU ``timeout``)
141    stdout was closed by its reader (``| head``), as SIGPIPE
126    ``run``: the command is not allowed
127    ``run``: the command cannot be executed (not found)
128+N  ``run``: the command was killed by signal N
255    no server: cannot connect, refused token, connection lost
=====  ==============================================================
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from service import errors
from service.client import ConnectionLost, ExecutorClient

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_SERVER = 255
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class CommandError(Exception):
    """A failure to report on stderr with an exit status; raised by subcommands."""

    def __init__(self, message: str, status: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url",
        help="server URL: ws://HOST:PORT/ws/mcp, http://HOST:PORT or HOST:PORT "
        "(default $CC_EXECUTOR_URL, else ws://127.0.0.1:8003/ws/mcp)",
    )
    group.add_argument("--token", help="access token (default $CC_EXECUTOR_TOKEN)")
    group.add_argument(
        "--cafile",
        help="CA certificate (PEM) trusted for a wss:// server, besides the system trust "
        "store (which honours $SSL_CERT_FILE)",
    )


def build_client(args: argparse.Namespace) -> ExecutorClient:
    """The client the options describe; CommandError for a bad URL or CA file."""
    context = None
    if getattr(args, "cafile", None):
        try:
            context = ssl.create_default_context()
            context.load_verify_locations(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(f"cannot read --cafile {args.cafile}: {exc}", EXIT_USAGE) from None
    try:
        return ExecutorClient.from_env(args.url, args.token, ssl=context)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


async def connect(client: ExecutorClient) -> ExecutorClient:
    """Open ``client``; CommandError (255) naming the reason when it cannot."""
    try:
        await client.connect()
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        reason = {401: "missing or invalid token (use --token or CC_EXECUTOR_TOKEN)"}.get(
            status, "refused"
        )
        raise CommandError(f"{client.url}: HTTP {status}: {reason}", EXIT_NO_SERVER) from None
    except (OSError, TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
        raise CommandError(f"cannot connect to {client.url}: {exc}", EXIT_NO_SERVER) from None
    except ConnectionLost as exc:
        raise CommandError(f"{client.url}: {exc}", EXIT_NO_SERVER) from None
    return client


def report(message: str) -> None:
    print(f"cc-executor: {message}", file=sys.stderr, flush=True)


def run_command(main: Callable[[], Awaitable[int]]) -> int:
    """Run a subcommand's coroutine; every expected failure becomes a line on
    stderr and its exit status."""
    try:
        return asyncio.run(_guarded(main))
    except KeyboardInterrupt:
        return 130


async def _guarded(main: Callable[[], Awaitable[int]]) -> int:
    try:
        return await main()
    except CommandError as exc:
        report(exc.message)
        return exc.status
    except errors.RpcError as exc:
        report(f"{exc.message} (code {exc.code})")
        return EXIT_REFUSED
    except ConnectionLost as exc:
        report(f"connection lost: {exc}")
        return EXIT_NO_SERVER
    except BrokenPipeError:
        # The reader went away (``| head``): quietly, as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def registered(subparsers: Any, name: str) -> bool:
    """Whether ``name`` already has a parser (modules holding several subcommands
    are asked once per name)."""
    return name in subparsers.choices


async def resolve_project(client: ExecutorClient, project: str) -> str:
    """The id of the project named or identified by ``project``."""
    try:
        found = await client.call("project.get", {"project_id": project})
        return str(found.get("project_id") or found.get("id") or project)
    except errors.NotFound:
        pass
    except errors.InvalidParams:
        pass  # not shaped like an id
    listing = await client.call("project.list", {})
    projects = listing.get("projects", []) if isinstance(listing, dict) else listing
    for record in projects:
        if record.get("name") == project:
            return str(record.get("project_id") or record.get("id"))
    raise CommandError(f"no project with id or name {project!r}")
