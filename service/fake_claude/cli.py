"""fake-claude's command line, parsed like the real CLI's (commander.js)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from typing import NoReturn

from service.fake_claude.events import write_line
from service.fake_claude.scenarios import VERSION, Run
from service.fake_claude.sessions import append_entry, latest_session, load_prompts, session_path

#: Options whose value is a list of words (commander's variadic ``<items...>``).
LIST_OPTIONS = ("--allowedTools", "--disallowedTools", "--add-dir", "--mcp-config", "--betas")


class CliError(Exception):
    """A usage error, reported like commander does: ``error: ...``, exit 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def build_parser() -> Parser:
    parser = Parser(prog="claude", add_help=True, allow_abbrev=False)
    add = parser.add_argument
    add("prompt", nargs="?", default=None)
    add("-p", "--print", action="store_true")
    add("--output-format", choices=["text", "json", "stream-json"], default="text")
    add("--input-format", choices=["text", "stream-json"], default="text")
    add("--verbose", action="store_true")
    add("-r", "--resume", nargs="?", const="", default=None)
    add("-c", "--continue", dest="continue_", action="store_true")
    add("--session-id", default=None)
    add("--fork-session", action="store_true")
    add("--model", default=None)
    add("--fallback-model", default=None)
    add("--max-turns", type=int, default=None)
    add("--permission-mode", default=None)
    add("--dangerously-skip-permissions", action="store_true")
    add("--system-prompt", default=None)
    add("--append-system-prompt", default=None)
    add("--include-partial-messages", action="store_true")
    add("--strict-mcp-config", action="store_true")
    add("--permission-prompt-tool", default=None)
    add("-v", "--version", action="store_true")
    for option in LIST_OPTIONS:
        add(option, nargs="+", default=[])
    return parser


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompt argument, else stdin (text, or stream-json user messages)."""
    if args.prompt is not None:
        return [args.prompt]
    if sys.stdin is None or sys.stdin.isatty():
        return []
    data = sys.stdin.read()
    if args.input_format == "text":
        return [data] if data.strip() else []
    prompts = []
    for line in data.splitlines():
        if not line.strip():
            continue
        message = json.loads(line).get("message", {})
        content = message.get("content", "")
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        prompts.append(str(content))
    return prompts


def check_options(parser: Parser, argv: list[str]) -> None:
    """Refuse unknown options as commander does: before ``--`` every word that
    starts with ``-`` is an option, even one holding spaces (argparse alone
    would take such a word as the prompt)."""
    known: dict[str, bool] = {}
    for action in parser._actions:
        for name in action.option_strings:
            known[name] = action.nargs is None  # exactly one value follows
    expect_value = False
    for token in argv:
        if token == "--":
            return
        if expect_value:
            expect_value = False
            continue
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0] if token.startswith("--") else token[:2]
            if name not in known:
                raise CliError(f"unknown option '{token}'")
            expect_value = known[name] and "=" not in token and len(token) == len(name)


def run(argv: list[str]) -> int:
    try:
        parser = build_parser()
        check_options(parser, argv)
        args = parser.parse_args(argv)
    except CliError as exc:
        message = str(exc)
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            message = f"unknown option '{unknown.group(1)}'"
        sys.stderr.write(f"error: {message}\n")
        return 1
    if args.version:
        write_line(VERSION)
        return 0
    if not args.print:
        sys.stderr.write("fake-claude: interactive mode is not supported; use -p\n")
        return 1
    if args.output_format == "stream-json" and not args.verbose:
        sys.stderr.write(
            "Error: When using --print, --output-format=stream-json requires --verbose\n"
        )
        return 1
    if args.session_id and (args.resume is not None or args.continue_):
        sys.stderr.write("Error: --session-id cannot be used with --continue or --resume.\n")
        return 1
    cwd = os.getcwd()
    history: list[str] = []
    session_id = args.session_id or str(uuid.uuid4())
    resumed = args.resume or (latest_session(cwd) if args.continue_ else None)
    if args.resume == "":
        sys.stderr.write("Error: --resume requires a session ID in print mode\n")
        return 1
    if args.continue_ and resumed is None:
        sys.stderr.write("No conversation found to continue\n")
        return 1
    if resumed is not None:
        path = session_path(cwd, resumed)
        if not path.is_file():
            sys.stderr.write(f"No conversation found with session ID: {resumed}\n")
            return 1
        history = load_prompts(path)
        if not args.fork_session:
            session_id = resumed
    prompts = read_prompts(args)
    if not prompts:
        sys.stderr.write(
            "Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print\n"
        )
        return 1
    code = 0
    for prompt in prompts:
        path = session_path(cwd, session_id)
        append_entry(path, {"type": "user", "prompt": prompt, "ts": time.time()})
        turn = Run(args, session_id, history)
        code = turn.play(prompt)
        append_entry(path, {"type": "assistant", "exit_code": code, "ts": time.time()})
        history = [*history, prompt]
    return code


def main() -> None:
    """Console script entry point."""
    try:
        code = run(sys.argv[1:])
    except BrokenPipeError:
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
