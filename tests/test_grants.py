"""Per-run credentials without a server: the config file, revocation, the URL,
and the settings that bound approvals."""

from __future__ import annotations

import json
import os
import stat

import pytest
from pydantic import ValidationError

from service.projects.grants import PROMPT_TOOL, Grants, own_mcp_url
from service.projects.permission import SHOWN_VALUE_BYTES, shown_input
from service.settings import Settings


def test_config_file_is_private_and_removed_on_revoke() -> None:
    grants = Grants()
    grant = grants.mint("p1", "http://127.0.0.1:8003/mcp")
    assert grant.config_path is not None
    mode = os.stat(grant.config_path).st_mode
    assert stat.S_IMODE(mode) == 0o600
    with open(grant.config_path) as handle:
        config = json.load(handle)
    server = config["mcpServers"]["cc_executor"]
    assert server == {
        "type": "http",
        "url": "http://127.0.0.1:8003/mcp",
        "headers": {"Authorization": f"Bearer {grant.token}"},
    }
    assert PROMPT_TOOL == "mcp__cc_executor__approve"
    assert grants.find(grant.token) is grant and grants.is_run_token(grant.token)
    grants.revoke(grant)
    grants.revoke(grant)  # twice is harmless
    assert not os.path.exists(grant.config_path)
    assert grants.find(grant.token) is None and grant.revoked
    assert grants.is_run_token(grant.token), "revoked credentials stay recognisable"
    assert not grants.is_run_token("some-other-token")


def test_each_run_gets_its_own_credential() -> None:
    grants = Grants()
    first, second = grants.mint("p", "http://x/mcp"), grants.mint("p", "http://x/mcp")
    try:
        assert first.token != second.token and len(first.token) >= 40
        assert first.config_path != second.config_path
    finally:
        grants.revoke_all()
    assert not os.path.exists(str(first.config_path))


@pytest.mark.parametrize(
    ("host", "tls", "url"),
    [
        ("127.0.0.1", False, "http://127.0.0.1:9/mcp"),
        ("0.0.0.0", False, "http://127.0.0.1:9/mcp"),
        ("::", True, "https://[::1]:9/mcp"),
        ("::1", False, "http://[::1]:9/mcp"),
        ("10.1.2.3", True, "https://10.1.2.3:9/mcp"),
    ],
)
def test_own_mcp_url(host: str, tls: bool, url: str) -> None:
    assert own_mcp_url(host, 9, tls) == url


def test_settings_bound_approvals() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.agent_approvals == "none" and settings.permission_timeout_s == 300
    with pytest.raises(ValidationError, match="permission_timeout_s"):
        Settings(_env_file=None, permission_timeout_s=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="agent_approvals"):
        Settings(_env_file=None, agent_approvals="everyone")  # type: ignore[call-arg]


def test_large_inputs_are_shown_shortened() -> None:
    small = {"command": "ls"}
    assert shown_input(small, 1000) == (small, False)
    big = {"file_path": "/p/x.txt", "content": "x" * 5000, "lines": list(range(2000))}
    shown, shortened = shown_input(big, 1000)
    assert shortened and shown["file_path"] == "/p/x.txt"
    assert shown["content"] == "[5002 bytes not shown]"
    assert shown["lines"].endswith("bytes not shown]")
    assert big["content"] == "x" * 5000, "the input itself is untouched"
    assert SHOWN_VALUE_BYTES == 1024
