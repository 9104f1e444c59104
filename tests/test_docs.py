"""The documentation and deployment files keep up with the code.

- ``docs/configuration.md`` is exactly what the generator makes from the
  settings model, and the check that CI runs fails on a stale copy.
- ``docs/protocol.md`` documents every registered method with a captured
  request, and every error code and notification of the contract.
- The workflow's timeout schema really rejects a job without
  ``timeout-minutes``; the image's entry point refuses to start without a
  token; its HEALTHCHECK command and ``ci/docker_smoke.py`` work against a
  real server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from service import errors, settings_doc
from service.server.methods import build_router
from service.settings import Settings
from tests.utils import RunningServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent


def protocol_page() -> str:
    return (DOCS / "protocol.md").read_text(encoding="utf-8")


def captured_lines(page: str, prefix: str) -> list[str]:
    """The ``-->`` or ``<--`` lines of the page's captured exchanges."""
    return [line for line in page.splitlines() if line.startswith(prefix + " ")]


# --- configuration.md ------------------------------------------------------------


def test_configuration_page_is_current() -> None:
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == settings_doc.render(), "docs/configuration.md is stale: run `make docs`"


def test_configuration_page_lists_every_setting_with_its_environment_name() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        row = f"| `{name}`"
        assert row in page, f"setting {name} missing"
        assert f"`CC_EXECUTOR_{name.upper()}`" in page


def test_configuration_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    page = settings_doc.render()
    # What a setting added without `make docs` looks like: the page lacks its row.
    stale.write_text(page.replace("| `kill_grace_s`", "| `kill_grace`"), encoding="utf-8")
    assert settings_doc.main(["--check", str(stale)]) == 1
    stale.write_text(page, encoding="utf-8")
    assert settings_doc.main(["--check", str(stale)]) == 0


def test_configuration_page_does_not_depend_on_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = settings_doc.render()
    monkeypatch.setenv("HOME", "/somewhere/else")
    monkeypatch.setenv("XDG_STATE_HOME", "/var/state")
    assert settings_doc.render() == before
    assert os.environ["HOME"] == "/somewhere/else"  # restored after rendering


# --- protocol.md -----------------------------------------------------------------


def test_protocol_page_has_a_captured_request_for_every_method() -> None:
    page = protocol_page()
    sent = "\n".join(captured_lines(page, "-->"))
    for name in build_router().names:
        assert f"`{name}`" in page, f"method {name} is not documented"
        assert f'"method": "{name}"' in sent, f"method {name} has no captured exchange"


def test_protocol_page_shows_every_error_code() -> None:
    page = protocol_page()
    received = "\n".join(captured_lines(page, "<--"))
    codes = [v for name, v in vars(errors).items() if name.isupper() and isinstance(v, int)]
    assert len(codes) == 12
    for code in codes:
        assert f"| {code} |" in page, f"error {code} missing from the table"
        if code != errors.INTERNAL_ERROR:  # a bug cannot be provoked on purpose
            assert f'"code":{code}' in received, f"error {code} has no captured exchange"


CONTRACT_NOTIFICATIONS = [
    "connected",
    "process.started",
    "process.output",
    "process.paused",
    "process.resumed",
    "process.cancelled",
    "process.completed",
    "process.error",
    "agent.event",
    "agent.result",
    "project.state",
    "server.stats",
]


def test_protocol_page_shows_every_notification() -> None:
    page = protocol_page()
    table = page.split("\n## Notifications\n", 1)[1].split("\n## ", 1)[0]
    received = "\n".join(captured_lines(page, "<--"))
    for method in CONTRACT_NOTIFICATIONS:
        assert f"`{method}`" in table, f"notification {method} missing from the table"
        if method != "process.error":  # the server does not send it (see the page)
            assert f'"method":"{method}"' in received, f"{method} has no captured exchange"


def test_protocol_page_captures_are_valid_json_rpc() -> None:
    page = protocol_page()
    for line in captured_lines(page, "<--") + captured_lines(page, "-->"):
        text = line[4:]
        if text.startswith(("GET ", "2", "4")):  # the HTTP exchange
            continue
        try:
            message = json.loads(text)
        except ValueError:
            assert "parse error" in page  # the deliberately broken frame
            continue
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and "jsonrpc" in item and item["jsonrpc"] != "2.0":
                assert item.get("id") == 2  # the deliberate jsonrpc 1.0 request


# --- CI and deployment files -----------------------------------------------------------


def test_timeout_schema_rejects_a_job_without_timeout(tmp_path: Path) -> None:
    workflow = (ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8")
    check = [str(VENV_BIN / "check-jsonschema"), "--builtin-schema"]
    schema = "custom.github-workflows-require-timeout"
    ok = subprocess.run([*check, schema, str(ROOT / ".github/workflows/ci.yml")], check=False)
    assert ok.returncode == 0
    bad = tmp_path / "ci.yml"
    bad.write_text(re.sub(r"\n\s+timeout-minutes: \d+", "", workflow, count=1), encoding="utf-8")
    refused = subprocess.run([*check, schema, str(bad)], capture_output=True, check=False)
    assert refused.returncode == 1
    assert b"timeout-minutes" in refused.stdout


def entrypoint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(ROOT / "deploy/docker-entrypoint.sh"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_image_entrypoint_requires_a_token(tmp_path: Path) -> None:
    refused = entrypoint(["cc-executor", "serve"], {})
    assert refused.returncode == 64
    assert "CC_EXECUTOR_TOKEN" in refused.stderr
    unreadable = entrypoint(["cc-executor", "serve"], {"CC_EXECUTOR_TOKEN_FILE": "/nonexistent"})
    assert unreadable.returncode == 64
    token_file = tmp_path / "token"
    token_file.write_text("secret\n")
    for env in ({"CC_EXECUTOR_TOKEN": "secret"}, {"CC_EXECUTOR_TOKEN_FILE": str(token_file)}):
        started = entrypoint(["cc-executor", "--version"], env)
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("cc-executor ")
    # Other commands (a shell for debugging, the Locust image) pass through.
    assert entrypoint(["true"], {}).returncode == 0


def test_image_healthcheck_probes_a_real_server(server: RunningServer) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s+CMD (\[.*\])", dockerfile)
    assert match is not None
    command = json.loads(match.group(1))
    assert command[0] == "python"
    env = {**os.environ, "CC_EXECUTOR_PORT": str(server.port)}
    healthy = subprocess.run([sys.executable, *command[1:]], env=env, timeout=10, check=False)
    assert healthy.returncode == 0
    env["CC_EXECUTOR_PORT"] = "1"  # nothing listens there
    sick = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=10, check=False
    )
    assert sick.returncode != 0


def test_docker_smoke_script_against_a_real_server(
    make_server: Callable[..., RunningServer], marker: dict[str, str]
) -> None:
    running = make_server({"token": "smoke-token"})
    marker_args = [f"--env={name}={value}" for name, value in marker.items()]
    smoke = subprocess.run(
        [
            sys.executable,
            str(ROOT / "ci/docker_smoke.py"),
            running.http_url,
            "smoke-token",
            "--allow-root",
            *marker_args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "FAIL" not in smoke.stdout
    assert "ok   process.completed with status completed" in smoke.stdout
