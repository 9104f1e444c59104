"""Where fake-claude keeps its sessions: one JSON-lines file per session, per
working directory, like ``~/.claude/projects/<dir>/<session>.jsonl``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


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
