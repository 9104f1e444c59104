"""The prompt file format: parse a prompt's Markdown, rewrite its two tables.

A prompt file is plain Markdown (it passes markdownlint) with four parts the
tool reads, found by their headings:

- ``## Header``: one fenced ``toml`` block with ``name``, ``version``,
  ``command`` (a list of argv words, or a string split like a shell would),
  ``timeout_s``, ``expect`` (regular expressions), and optionally ``kind``
  (``command`` or ``agent``), ``cwd`` and, for an agent, ``claude_bin`` (the
  CLI its runs must go through: ``fake-claude`` says so in the file).
  Placeholders in ``command`` and ``cwd``: ``{marker}``, ``{prompt_file}``,
  ``{repo}``, ``{python}``.
- ``## Prompt``: the prompt text (free Markdown).
- ``## Gamification Metrics``: one table, rewritten by the tool.
- ``## Evolution History``: one table; the tool rewrites the ``Result`` of
  each authored row and owns the rows whose change starts with ``Graduated``
  or ``Reset``.
- ``## Recovery Tests``: at least three list items (scenarios).

Everything outside the two tables is kept byte for byte when they are
rewritten. Parsing is pure (no I/O); :func:`write_atomic` is the one writer.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.prompts.verdict import PatternError, compile_pattern

METRICS_HEADING = "Gamification Metrics"
HISTORY_HEADING = "Evolution History"
RECOVERY_HEADING = "Recovery Tests"
HEADER_HEADING = "Header"
PROMPT_HEADING = "Prompt"

METRICS_COLUMNS = ("Success", "Failure", "Total", "Ratio", "Last Updated", "Status")
HISTORY_COLUMNS = ("Version", "Date", "Change and reason", "Result")
#: Evolution rows whose change starts with one of these are written by the tool.
GENERATED_PREFIXES = ("Graduated", "Reset")
STATUSES = ("active", "graduated", "reset")
KINDS = ("command", "agent")
PLACEHOLDERS = ("marker", "prompt_file", "repo", "python")
MIN_RECOVERY_TESTS = 3
#: What a prompt's name may be (it names a file and a column in the store).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class PromptFormatError(ValueError):
    """The file is not a valid prompt file; the message says where and why."""


@dataclass(frozen=True)
class Header:
    name: str
    version: int
    command: tuple[str, ...]
    timeout_s: float
    expect: tuple[str, ...]
    kind: str = "command"
    cwd: str | None = None
    claude_bin: str | None = None


@dataclass(frozen=True)
class MetricsRow:
    success: int
    failure: int
    total: int
    ratio: str
    last_updated: str
    status: str

    def cells(self) -> tuple[str, ...]:
        return (
            str(self.success),
            str(self.failure),
            str(self.total),
            self.ratio,
            self.last_updated,
            self.status,
        )


@dataclass(frozen=True)
class HistoryRow:
    version: int
    date: str
    change: str
    result: str

    @property
    def generated(self) -> bool:
        return self.change.startswith(GENERATED_PREFIXES)

    def cells(self) -> tuple[str, ...]:
        return (str(self.version), self.date, self.change, self.result)


@dataclass
class PromptDocument:
    """A parsed prompt file: its text, its header and its two tables."""

    path: Path
    text: str
    header: Header
    prompt_text: str
    metrics: MetricsRow
    history: list[HistoryRow]
    recovery_tests: list[str]
    #: (start, end) line indexes of each table, end exclusive.
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.header.name


# --- parsing -------------------------------------------------------------------


def _sections(lines: list[str]) -> dict[str, tuple[int, int]]:
    """``## Heading`` -> (first line after it, line of the next ``##``)."""
    found: list[tuple[str, int]] = []
    in_fence = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("## "):
            found.append((line[3:].strip(), index))
    sections = {}
    for position, (title, index) in enumerate(found):
        end = found[position + 1][1] if position + 1 < len(found) else len(lines)
        sections[title] = (index + 1, end)
    return sections


def split_row(line: str) -> list[str]:
    """The cells of one Markdown table row; ``\\|`` is a literal bar."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    cells = re.split(r"(?<!\\)\|", body)
    return [cell.strip().replace("\\|", "|") for cell in cells]


def _table(
    lines: list[str], span: tuple[int, int], heading: str
) -> tuple[int, int, list[list[str]]]:
    start, end = span
    first = next((i for i in range(start, end) if lines[i].lstrip().startswith("|")), None)
    if first is None:
        raise PromptFormatError(f"section '{heading}' has no table")
    last = first
    while last < end and lines[last].lstrip().startswith("|"):
        last += 1
    rows = [split_row(line) for line in lines[first:last]]
    if len(rows) < 2 or not all(set(c) <= set(":- ") for c in rows[1]):
        raise PromptFormatError(f"the table under '{heading}' lacks its header separator")
    return first, last, rows


def _check_columns(heading: str, found: list[str], wanted: tuple[str, ...]) -> None:
    if tuple(found) != wanted:
        raise PromptFormatError(
            f"the table under '{heading}' must have the columns {' | '.join(wanted)}; "
            f"found {' | '.join(found)}"
        )


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise PromptFormatError(f"{what} must be an integer, not {value!r}") from None


def parse_header(block: str) -> Header:
    try:
        data: dict[str, Any] = tomllib.loads(block)
    except tomllib.TOMLDecodeError as exc:
        raise PromptFormatError(f"the Header block is not valid TOML: {exc}") from None
    required = ["name", "version", "timeout_s"]
    if data.get("kind", "command") == "command":
        required.append("command")
    missing = [key for key in required if key not in data]
    if missing:
        raise PromptFormatError(f"the Header lacks {', '.join(missing)}")
    known = {"name", "version", "command", "timeout_s", "expect", "kind", "cwd", "claude_bin"}
    unknown = set(data) - known
    if unknown:
        raise PromptFormatError(f"unknown Header keys: {', '.join(sorted(unknown))}")
    name, version, command = data["name"], data["version"], data.get("command", [])
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise PromptFormatError(f"name must be letters, digits, '_', '.', '-': {name!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PromptFormatError(f"version must be a positive integer: {version!r}")
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise PromptFormatError(f"command cannot be split: {exc}") from None
    elif isinstance(command, list) and all(isinstance(word, str) for word in command):
        argv = list(command)
    else:
        raise PromptFormatError("command must be a string or a list of strings")
    if not argv and data.get("kind", "command") == "command":
        raise PromptFormatError("command is empty")
    timeout = data["timeout_s"]
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise PromptFormatError(f"timeout_s must be a positive number: {timeout!r}")
    expect = data.get("expect", [])
    if not isinstance(expect, list) or not all(isinstance(p, str) for p in expect):
        raise PromptFormatError("expect must be a list of regular expressions")
    for pattern in expect:
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise PromptFormatError(f"expect {exc}") from None
    kind = data.get("kind", "command")
    if kind not in KINDS:
        raise PromptFormatError(f"kind must be one of {', '.join(KINDS)}: {kind!r}")
    cwd = data.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise PromptFormatError("cwd must be a string")
    claude_bin = data.get("claude_bin")
    if claude_bin is not None and (
        kind != "agent" or not isinstance(claude_bin, str) or not claude_bin or "/" in claude_bin
    ):
        raise PromptFormatError("claude_bin is an agent prompt's CLI name (no '/')")
    for word in [*argv, cwd or ""]:
        for placeholder in re.findall(r"\{([a-z_]+)\}", word):
            if placeholder not in PLACEHOLDERS:
                raise PromptFormatError(
                    f"unknown placeholder {{{placeholder}}}; known: "
                    + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                )
    if kind == "command" and not any("{marker}" in word for word in argv):
        raise PromptFormatError(
            "command must pass {marker} to the run (the anti-hallucination rule)"
        )
    return Header(name, version, tuple(argv), float(timeout), tuple(expect), kind, cwd, claude_bin)


def parse(text: str, path: Path) -> PromptDocument:
    """Parse a prompt file; :class:`PromptFormatError` names what is wrong."""
    lines = text.split("\n")
    sections = _sections(lines)
    for heading in (
        HEADER_HEADING,
        PROMPT_HEADING,
        METRICS_HEADING,
        HISTORY_HEADING,
        RECOVERY_HEADING,
    ):
        if heading not in sections:
            raise PromptFormatError(f"{path.name}: missing section '## {heading}'")
    start, end = sections[HEADER_HEADING]
    fence = next((i for i in range(start, end) if lines[i].startswith("```toml")), None)
    if fence is None:
        raise PromptFormatError(f"{path.name}: the Header section needs a ```toml block")
    close = next((i for i in range(fence + 1, end) if lines[i].startswith("```")), None)
    if close is None:
        raise PromptFormatError(f"{path.name}: the Header's ```toml block is not closed")
    try:
        header = parse_header("\n".join(lines[fence + 1 : close]))
    except PromptFormatError as exc:
        raise PromptFormatError(f"{path.name}: {exc}") from None

    p_start, p_end = sections[PROMPT_HEADING]
    prompt_text = "\n".join(lines[p_start:p_end]).strip()
    if not prompt_text:
        raise PromptFormatError(f"{path.name}: the Prompt section is empty")
    if header.kind == "agent" and "{marker}" not in prompt_text:
        raise PromptFormatError(
            f"{path.name}: an agent prompt's text must ask for {{marker}} (anti-hallucination)"
        )

    try:
        m_first, m_last, m_rows = _table(lines, sections[METRICS_HEADING], METRICS_HEADING)
        _check_columns(METRICS_HEADING, m_rows[0], METRICS_COLUMNS)
        if len(m_rows) != 3:
            raise PromptFormatError(f"the '{METRICS_HEADING}' table must have exactly one row")
        cells = m_rows[2]
        if len(cells) != len(METRICS_COLUMNS):
            raise PromptFormatError(f"the '{METRICS_HEADING}' row has {len(cells)} cells")
        metrics = MetricsRow(
            _int(cells[0], "Success"),
            _int(cells[1], "Failure"),
            _int(cells[2], "Total"),
            cells[3],
            cells[4],
            cells[5],
        )
        if metrics.status not in STATUSES:
            raise PromptFormatError(f"Status must be one of {', '.join(STATUSES)}")
        h_first, h_last, h_rows = _table(lines, sections[HISTORY_HEADING], HISTORY_HEADING)
        _check_columns(HISTORY_HEADING, h_rows[0], HISTORY_COLUMNS)
        history = []
        for cells in h_rows[2:]:
            if len(cells) != len(HISTORY_COLUMNS):
                raise PromptFormatError(f"an '{HISTORY_HEADING}' row has {len(cells)} cells")
            history.append(HistoryRow(_int(cells[0], "Version"), cells[1], cells[2], cells[3]))
    except PromptFormatError as exc:
        raise PromptFormatError(f"{path.name}: {exc}") from None

    r_start, r_end = sections[RECOVERY_HEADING]
    recovery = [
        line.split(maxsplit=1)[1] if len(line.split(maxsplit=1)) > 1 else ""
        for line in lines[r_start:r_end]
        if re.match(r"^(\d+\.|-|\*) ", line)
    ]
    if len(recovery) < MIN_RECOVERY_TESTS:
        raise PromptFormatError(
            f"{path.name}: 'Recovery Tests' needs at least {MIN_RECOVERY_TESTS} scenarios "
            f"(list items); found {len(recovery)}"
        )
    return PromptDocument(
        path=path,
        text=text,
        header=header,
        prompt_text=prompt_text,
        metrics=metrics,
        history=history,
        recovery_tests=recovery,
        spans={"metrics": (m_first, m_last), "history": (h_first, h_last)},
    )


def load(path: Path) -> PromptDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse(text, path)


# --- rendering -----------------------------------------------------------------


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def render_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A Markdown table in markdownlint's "compact" style."""
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    out += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return out


def render(document: PromptDocument, metrics: MetricsRow, history: list[HistoryRow]) -> str:
    """The document's text with both tables replaced; everything else unchanged."""
    lines = document.text.split("\n")
    replacements = {
        "metrics": render_table(METRICS_COLUMNS, [metrics.cells()]),
        "history": render_table(HISTORY_COLUMNS, [row.cells() for row in history]),
    }
    # Replace the later span first so the earlier indexes stay valid.
    for key, (first, last) in sorted(document.spans.items(), key=lambda kv: -kv[1][0]):
        lines[first:last] = replacements[key]
    return "\n".join(lines)


def substitute(word: str, values: dict[str, str]) -> str:
    """Replace the known ``{placeholders}`` in one argv word; other braces stay."""
    return re.sub(r"\{([a-z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), word)
