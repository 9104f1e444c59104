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
``permission=TOOL``
    a ``tool_use`` of TOOL (default ``Bash``, input ``{"command": "ls"}``) that
    needs permission: the tool named by ``--permission-prompt-tool`` is called
    on its server from ``--mcp-config`` (Streamable HTTP, the official MCP
    client). Allowed: a ``tool_result`` showing the input it ran with.
    Denied (or no prompt tool): a ``tool_result`` error with the message, an
    answer containing "denied" and the message, and ``permission_denials`` in
    the result. A failed prompt tool call ends with an error result.
"""

from service.fake_claude.cli import main, run

__all__ = ["main", "run"]
