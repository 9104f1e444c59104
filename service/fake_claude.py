"""``fake-claude``: a test double of the Claude Code CLI in headless mode.

It accepts the real CLI's headless flags and prints what the real one prints,
so the service's agent code is tested against the same argv and the same
stream-json events it meets in production, without a network or an API key:

* ``--output-format stream-json`` (which, like the real CLI, requires
  ``--verbose`` with ``-p``): a ``system``/``init`` event with ``session_id``,
  ``assistant`` events with ``text`` and ``tool_use`` blocks, ``user`` events
  with ``tool_result`` blocks, and a final ``result`` event with ``subtype``,
  ``is_error``, ``duration_ms``, ``num_turns``, ``session_id``,
  ``total_cost_usd``, ``usage`` and ``result``. ``json`` prints the result
  object (an array of every message with ``--verbose``); ``text`` prints the
  answer.
* Sessions are kept per working directory, like ``~/.claude/projects``, under
  ``$FAKE_CLAUDE_STATE_DIR`` (default ``$XDG_STATE_HOME/fake-claude``, else
  ``~/.local/state/fake-claude``). ``--resume ID`` of a known session keeps
  the id and remembers earlier prompts; an unknown id fails as the real CLI
  does (``No conversation found with session ID: ID``, exit 1). ``--continue``
  resumes the directory's most recent session.
* Options are parsed like the real CLI's (commander.js): an argument starting
  with ``-`` is an option, so a prompt starting with ``-`` must follow ``--``;
  ``--allowedTools`` and the other list options take every following word up
  to the next option or ``--``.

Scenarios are chosen by ``fake:NAME`` or ``fake:NAME=VALUE`` in the prompt or
by ``$FAKE_CLAUDE_SCENARIO`` (``NAME`` or ``NAME=VALUE``):

``success`` (default)
    a tool round (``tool_use`` ``Bash``, its ``tool_result``) and an answer.
``error``
    an ``error_during_execution`` result with ``is_error: true``; exit 1.
``slow=N``
    silence for N seconds (default 2) after ``init``, then success.
``bigline=N``
    one assistant event whose text is N bytes (default 5,000,000), one line.
``flood=N``
    N assistant events (default 100) of 16 KiB of text each, 3 ms apart, then success.
``crash``
    half a JSON line, a stack trace on stderr, exit 1, no result.
``noresult``
    an assistant event, then exit 0 without a result event.
``ignore-term``
    SIGTERM is ignored; waits forever after ``init``.
``hang``
    waits forever after ``init`` (SIGTERM ends it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

VERSION = "2.0.0 (Claude Code; fake-claude test double)"
DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
TOOLS = ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "WebFetch", "TodoWrite"]
SCENARIO_RE = re.compile(r"\bfake:([a-z][a-z-]*)(?:=(\S+))?")
SCENARIOS = (
    "success",
    "error",
    "slow",
    "bigline",
    "flood",
    "crash",
    "noresult",
    "ignore-term",
    "hang",
)
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
    add("-v", "--version", action="store_true")
    for option in LIST_OPTIONS:
        add(option, nargs="+", default=[])
    return parser


# --- sessions ------------------------------------------------------------------


def state_dir() -> Path:
    explicit = os.environ.get("FAKE_CLAUDE_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fake-claude"


def sessions_dir(cwd: str) -> Path:
    """Sessions of one working directory, named like ``~/.claude/projects``."""
    return state_dir() / "projects" / re.sub(r"[^A-Za-z0-9]", "-", cwd)


def session_path(cwd: str, session_id: str) -> Path:
    return sessions_dir(cwd) / f"{session_id}.jsonl"


def load_prompts(path: Path) -> list[str]:
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("type") == "user":
            prompts.append(entry["prompt"])
    return prompts


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def latest_session(cwd: str) -> str | None:
    folder = sessions_dir(cwd)
    files = (
        sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    )
    return files[-1].stem if files else None


# --- output --------------------------------------------------------------------


class Printer:
    """Writes events in the chosen output format; remembers them for ``json``."""

    def __init__(self, fmt: str, verbose: bool) -> None:
        self.fmt = fmt
        self.verbose = verbose
        self.messages: list[dict[str, Any]] = []

    def event(self, event: dict[str, Any]) -> None:
        self.messages.append(event)
        if self.fmt == "stream-json":
            write_line(json.dumps(event, ensure_ascii=False, separators=(",", ":")))

    def result(self, event: dict[str, Any]) -> None:
        self.messages.append(event)
        if self.fmt == "stream-json":
            write_line(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
        elif self.fmt == "json":
            payload: Any = self.messages if self.verbose else event
            write_line(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        else:
            write_line(
                str(event.get("result", "") if not event["is_error"] else event_error(event))
            )


def event_error(event: dict[str, Any]) -> str:
    errors = event.get("errors") or []
    return "Error: " + ("; ".join(errors) if errors else str(event.get("subtype")))


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
    }


def assistant(session_id: str, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(8),
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": str(uuid.uuid4()),
    }


def tool_result(session_id: str, tool_use_id: str, content: str) -> dict[str, Any]:
    return {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {
                    "tool_use_id": tool_use_id,
                    "type": "tool_result",
                    "content": content,
                    "is_error": False,
                }
            ],
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": str(uuid.uuid4()),
    }


# --- a run ---------------------------------------------------------------------


def pick_scenario(prompt: str) -> tuple[str, str | None]:
    match = SCENARIO_RE.search(prompt)
    if match:
        return match.group(1), match.group(2)
    configured = os.environ.get("FAKE_CLAUDE_SCENARIO", "").strip()
    if configured:
        name, _, value = configured.partition("=")
        return name, value or None
    return "success", None


def sleep_forever() -> NoReturn:
    while True:
        time.sleep(3600)


class Run:
    """One headless turn: the events of the chosen scenario."""

    def __init__(self, args: argparse.Namespace, session_id: str, history: list[str]) -> None:
        self.args = args
        self.session_id = session_id
        self.history = history
        self.model = args.model or DEFAULT_MODEL
        self.printer = Printer(args.output_format, args.verbose)
        self.started = time.monotonic()
        self.cwd = os.getcwd()
        self.turns = 0

    def init(self) -> None:
        if self.args.dangerously_skip_permissions:
            mode = "bypassPermissions"
        else:
            mode = self.args.permission_mode or "default"
        tools = self.args.allowedTools or TOOLS
        self.printer.event(
            {
                "type": "system",
                "subtype": "init",
                "cwd": self.cwd,
                "session_id": self.session_id,
                "tools": [t for item in tools for t in item.replace(",", " ").split()],
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": mode,
                "slash_commands": ["compact", "context", "cost", "init", "review"],
                "apiKeySource": "none",
                "claude_code_version": VERSION.split()[0],
                "output_style": "default",
                "agents": ["general-purpose"],
                "uuid": str(uuid.uuid4()),
            }
        )

    def say(self, content: list[dict[str, Any]]) -> None:
        self.turns += 1
        self.printer.event(assistant(self.session_id, self.model, content))

    def finish(self, subtype: str, text: str | None, errors: list[str] | None = None) -> int:
        is_error = subtype != "success"
        event: dict[str, Any] = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "duration_api_ms": int((time.monotonic() - self.started) * 800),
            "num_turns": max(self.turns, 1),
            "session_id": self.session_id,
            "total_cost_usd": round(0.0012 * max(self.turns, 1), 6),
            "usage": usage(8 * max(self.turns, 1)),
            "modelUsage": {},
            "permission_denials": [],
            "uuid": str(uuid.uuid4()),
        }
        if text is not None:
            event["result"] = text
        if errors:
            event["errors"] = errors
        self.printer.result(event)
        return 1 if is_error else 0

    def reply(self, prompt: str) -> str:
        text = f"Echo: {prompt}"
        if self.history:
            text += " (I remember: " + " | ".join(self.history) + ")"
        return text

    def within_turns(self, needed: int) -> bool:
        limit = self.args.max_turns
        return limit is None or needed <= limit

    def play(self, prompt: str) -> int:
        name, value = pick_scenario(prompt)
        if name == "ignore-term":
            # Before init: whoever saw init may already be sending SIGTERM.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.init()
        if name in ("hang", "ignore-term"):
            sleep_forever()
        if name == "slow":
            time.sleep(float(value or 2))
        if name == "error":
            self.say([{"type": "text", "text": "Something went wrong."}])
            return self.finish("error_during_execution", None, ["fake: the scenario failed"])
        if name == "crash":
            self.say([{"type": "text", "text": "Working on it."}])
            sys.stdout.write('{"type":"assistant","message":{"content":[{"type":"te')
            sys.stdout.flush()
            sys.stderr.write("TypeError: fake crash\n    at main (cli.js:1:1)\n")
            sys.stderr.flush()
            os._exit(1)
        if name == "noresult":
            self.say([{"type": "text", "text": "I will stop without a result."}])
            return 0
        if name == "bigline":
            size = int(value or 5_000_000)
            self.say([{"type": "text", "text": "x" * size}])
            return self.finish("success", self.reply(prompt))
        if name == "flood":
            for number in range(int(value or 100)):
                self.say([{"type": "text", "text": f"{number:08d}" + "y" * (16 * 1024 - 8)}])
                time.sleep(0.003)  # paced like a model, not a burst
            return self.finish("success", self.reply(prompt))
        if name not in SCENARIOS:
            self.say([{"type": "text", "text": f"unknown fake scenario {name!r}"}])
            return self.finish("error_during_execution", None, [f"unknown scenario {name}"])
        if not self.within_turns(2):
            self.turns = 2
            return self.finish(
                "error_max_turns",
                None,
                [f"Reached maximum number of turns ({self.args.max_turns})"],
            )
        tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
        self.say(
            [
                {"type": "text", "text": "Let me look at the project."},
                {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "ls"}},
            ]
        )
        listing = "\n".join(sorted(os.listdir(self.cwd)))
        self.printer.event(tool_result(self.session_id, tool_id, listing))
        answer = self.reply(prompt)
        self.say([{"type": "text", "text": answer}])
        return self.finish("success", answer)


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
