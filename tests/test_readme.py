"""The README's Python blocks run as printed, against a real server.

Each ```python block is written to a file and run with this interpreter (the
.venv's, as the README says), with only the port of ws://127.0.0.1:8003
changed to the test server's. A block whose first line says it needs a token
and a project gets a server with a token, a project root and fake-claude.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.utils import RunningServer

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), re.S | re.M)
README_URL = "ws://127.0.0.1:8003/ws/mcp"


def needs_project(block: str) -> bool:
    return block.startswith("# Needs:") and "project" in block.splitlines()[0]


def test_the_readme_has_its_examples() -> None:
    assert len(BLOCKS) >= 3
    assert all(README_URL in block for block in BLOCKS), "every block uses the default URL"
    assert sum(needs_project(block) for block in BLOCKS) == 1


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_block_runs_as_printed(
    index: int, make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    block = BLOCKS[index]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")}
    args: list[str] = []
    if needs_project(block):
        roots = tmp_path / "projects"
        (roots / "myapp").mkdir(parents=True)
        fake = shutil.which("fake-claude", path=str(Path(sys.executable).parent))
        assert fake, "fake-claude is installed with the project"
        server = make_server(
            {"token": "readme-token", "project_roots": [str(roots)], "claude_bin": fake}
        )
        env["CC_EXECUTOR_TOKEN"] = "readme-token"
        args = [str(roots / "myapp")]
    else:
        server = make_server()
    script = tmp_path / "example.py"
    script.write_text(block.replace(README_URL, server.url))
    for _ in range(2 if args else 1):  # the agent example reuses its project when run again
        done = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout.strip()
    if "ExecutorClient(" in block and not args:
        lines = done.stdout.splitlines()
        assert lines[:3] == ["streamed: line 1", "streamed: line 2", "streamed: line 3"]
        assert lines[3:] == ["completed 0 done", "cancelled 15"]
    elif not args:
        assert done.stdout.startswith("connected\n") and "process.completed" in done.stdout
    else:
        assert done.stdout.startswith("completed ")
