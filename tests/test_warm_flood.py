"""The warmed-flood memory benchmark (``stress/warm_flood.py``) runs end to
end against a real server: it warms it through ``/mcp``, floods it with two
real ``yes | pv`` executions and prints its figures. Not timed and no bar
checked (the machine is shared): the figures are the benchmark's to report.
And the server's own process does not import the client side of the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("pv") is None, reason="the flood is `yes | pv`")
def test_warm_flood_runs_and_reports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stress.warm_flood", "--seconds", "3", "--rate", "5000", "--maps"],
        capture_output=True,
        text=True,
        timeout=150,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["warm"] is True
    assert 0 < figures["idle_mb"] < figures["warmed_mb"] <= figures["peak_mb"]
    # The warm-up loaded the MCP SDK: far more than the flood adds.
    assert figures["warmed_mb"] - figures["idle_mb"] > 5
    assert figures["first_third_peak_mb"] > 0 and figures["last_third_peak_mb"] > 0
    assert isinstance(figures["flat"], bool)
    assert figures["warm_up_grew_mb"]


def _modules_after(argv: list[str]) -> tuple[int, list[str], str]:
    code = (
        "import sys\n"
        "from service import cli\n"
        f"try:\n    code = cli.main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(sorted(m for m in sys.modules if m.startswith(('service.client', 'service.prompts'))))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout.splitlines()[-1].replace("'", '"')), done.stderr


def test_serve_does_not_import_the_client_side() -> None:
    # An invalid --port makes argparse stop right after the parser is built.
    code, modules, stderr = _modules_after(["serve", "--port", "not-a-port"])
    assert code == 2 and "invalid int value" in stderr
    assert modules == []


def test_other_commands_still_get_their_parsers() -> None:
    code, modules, stderr = _modules_after(["ps", "--bogus"])
    assert code == 2 and "unrecognized arguments: --bogus" in stderr
    assert "service.client.commands.control" in modules
    assert "service.prompts.cli" in modules
    help_text = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for name in ("serve", "run", "ps", "prompts", "approvals"):
        assert name in help_text
