"""``cc-executor run -- CMD ARGS...`` and ``cc-executor attach ID``.

``run`` starts the command through the service and behaves like running it
here (see :mod:`service.client.commands.terminal`); ``attach`` follows an execution
that is already running (or replays a finished one), from ``--since SEQ``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
from typing import Any
from urllib.parse import urlsplit

from service import errors
from service.client.commands import (
    EXIT_USAGE,
    CommandError,
    add_connection_options,
    build_client,
    connect,
    registered,
    run_command,
)
from service.client.commands.terminal import InputPump, Mode, TerminalSession
from service.hosts import is_loopback_host

EXIT_NOT_ALLOWED = 126
EXIT_CANNOT_EXECUTE = 127


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if not registered(subparsers, "run"):
        run = subparsers.add_parser(
            "run",
            help="run a command through the service, as if it ran here",
            description="Run CMD through the service: its stdout and stderr arrive here as "
            "they are produced, its exit status is this command's. Ctrl-C cancels it (twice: "
            "disconnect), Ctrl-Z pauses it and this client, fg resumes both.",
        )
        run.add_argument(
            "--cwd",
            help="working directory of the command, on the server (default: this directory "
            "when the URL names this host, 127.0.0.1 or localhost; else the server's own)",
        )
        run.add_argument("--timeout", type=float, help="wall-clock limit in seconds")
        run.add_argument(
            "-e",
            "--env",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="environment variable for the command (repeatable)",
        )
        run.add_argument(
            "--shell",
            action="store_true",
            help="run CMD ARGS joined as one /bin/sh -c command (if the server allows it)",
        )
        stdin = run.add_mutually_exclusive_group()
        stdin.add_argument(
            "-i",
            "--stdin",
            dest="stdin",
            action="store_true",
            default=None,
            help="forward this stdin to the command (default: when stdin is not a terminal)",
        )
        stdin.add_argument(
            "--no-stdin", dest="stdin", action="store_false", help="give the command no stdin"
        )
        run.add_argument(
            "--reconnect",
            type=float,
            default=30.0,
            metavar="S",
            help="how long to try to reconnect after a dropped connection (default 30)",
        )
        add_connection_options(run)
        run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    if not registered(subparsers, "attach"):
        attach = subparsers.add_parser(
            "attach",
            help="follow an execution's output (replayed from --since)",
            description="Replay an execution's output after --since SEQ, then follow it live "
            "until it ends; exit with its status. Ctrl-C detaches, leaving it running.",
        )
        attach.add_argument("execution_id", metavar="ID")
        attach.add_argument("--since", type=int, default=0, metavar="SEQ")
        attach.add_argument("--reconnect", type=float, default=30.0, metavar="S")
        add_connection_options(attach)


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CommandError(f"--env expects NAME=VALUE, got {item!r}", EXIT_USAGE)
        env[name] = value
    return env


def run(args: argparse.Namespace) -> int:
    if args.command == "attach":
        return run_command(lambda: attach_main(args))
    return run_command(lambda: run_main(args))


async def run_main(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CommandError("nothing to run: cc-executor run [OPTIONS] -- CMD ARGS...", EXIT_USAGE)
    client = build_client(args)
    cwd, guessed = args.cwd, False
    if cwd is None and is_loopback_host(urlsplit(client.url).hostname):
        # Same host, same file system: run here, as the help promises. A remote
        # server has its own file system; there only --cwd names a directory.
        with contextlib.suppress(OSError):
            cwd, guessed = os.getcwd(), True
    params: dict[str, Any] = {"cwd": cwd, "timeout": args.timeout}
    env = parse_env(args.env)
    if env:
        params["env"] = env
    forward = args.stdin if args.stdin is not None else not os.isatty(0)
    if forward:
        params["stdin"] = True
    client = await connect(client)
    try:
        if args.shell:
            execution = await client.execute(shlex.join(argv), shell=True, **params)
        else:
            execution = await client.execute(argv=argv, **params)
    except errors.NotAllowed as exc:
        await client.close()
        raise CommandError(exc.message, EXIT_NOT_ALLOWED) from None
    except errors.InvalidParams as exc:
        await client.close()
        status = EXIT_CANNOT_EXECUTE if exc.error_name == "EXEC_FAILED" else EXIT_USAGE
        message = exc.message
        if guessed and exc.error_name == "INVALID_PATH":
            # A loopback URL forwarded to a container or another machine.
            message += " (the server does not see this directory: pass --cwd)"
        raise CommandError(message, status) from None
    except BaseException:
        await client.close()
        raise
    session = TerminalSession(
        lambda: build_client(args), client, execution, Mode.RUN, reconnect_s=args.reconnect
    )
    if not forward:
        return await session.follow()
    pump = InputPump(sys.stdin.fileno())
    pump.start(asyncio.get_running_loop())
    feeder = asyncio.create_task(pump.forward(execution), name="stdin-forward")
    try:
        return await session.follow()
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


async def attach_main(args: argparse.Namespace) -> int:
    client = await connect(build_client(args))
    try:
        execution = await client.attach(args.execution_id, since_seq=args.since)
    except errors.MethodNotFound:
        await client.close()
        raise CommandError("this server cannot attach (no store)") from None
    except BaseException:
        await client.close()
        raise
    session = TerminalSession(
        lambda: build_client(args),
        client,
        execution,
        Mode.ATTACH,
        reconnect_s=args.reconnect,
        last_seq=args.since,
    )
    return await session.follow()
