"""The ``cc-executor`` command: ``serve`` and the other subcommands.

Each subcommand lives in the module of its feature and registers itself here
through :data:`SUBCOMMANDS` (name -> module with ``add_parser`` and ``run``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from service import __version__

#: subcommand -> module providing ``add_parser(subparsers)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, str] = {
    "run": "service.client.commands.run",
    "attach": "service.client.commands.run",
    "ps": "service.client.commands.control",
    "pause": "service.client.commands.control",
    "resume": "service.client.commands.control",
    "cancel": "service.client.commands.control",
    "logs": "service.client.commands.logs",
    "agent": "service.client.commands.agent",
    "approvals": "service.client.commands.approvals",
    "prompts": "service.prompts.cli",
}


def add_serve_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the WebSocket service")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8003; 0 picks one)")
    serve.add_argument("--ssl-certfile", help="PEM certificate: serve wss:// and https://")
    serve.add_argument("--ssl-keyfile", help="PEM private key for --ssl-certfile")
    serve.add_argument("--data-dir", help="directory of the store")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.logs import configure_logging
    from service.process.containment import ContainmentUnavailable, resolve_root
    from service.server.serve import serve
    from service.settings import Settings
    from service.settings_errors import SettingsConflict, describe_error

    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "ssl_certfile": args.ssl_certfile,
            "ssl_keyfile": args.ssl_keyfile,
            "data_dir": args.data_dir,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    try:
        settings = Settings(**overrides).with_seed_aliases(os.environ)
    except ValidationError as exc:
        print(f"cc-executor: {describe_error(exc)}", file=sys.stderr)
        return 2
    except SettingsConflict as exc:
        print(f"cc-executor: {exc}", file=sys.stderr)
        return 2
    try:
        resolve_root(settings.cgroup_root)
    except ContainmentUnavailable as exc:
        print(f"cc-executor: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    serve(settings)
    return 0


def build_parser(
    subcommands: Mapping[str, str] = SUBCOMMANDS,
) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The parser with ``serve`` and each of ``subcommands`` (whose modules it imports)."""
    parser = argparse.ArgumentParser(prog="cc-executor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cc-executor {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    modules = {}
    for name, module_name in subcommands.items():
        module = importlib.import_module(module_name)
        module.add_parser(subparsers)
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # A server builds the parser of ``serve`` alone: the other subcommands'
    # modules (the WebSocket client, the prompts tool) would cost every server
    # about 1.4 MB of resident memory for code it never runs. ``serve`` comes
    # first or not at all, since the only options before a subcommand are
    # --help and --version.
    parser, modules = build_parser({} if words[:1] == ["serve"] else SUBCOMMANDS)
    args = parser.parse_args(words)
    if args.command == "serve":
        return run_serve(args)
    return int(modules[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
