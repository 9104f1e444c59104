"""Per-run credentials for the permission tool, and the MCP config that carries one.

An agent run with ``approvals: "clients"`` gets a :class:`Grant`: a random
bearer token minted for that run alone. It opens ``/mcp`` (even when the server
has an operator token, which the child never sees) but only for the
``approve`` tool, and only to ask about the run it was minted for. When the run
ends the grant is revoked and its token is remembered as revoked, so that it
is refused everywhere from then on, also on a server without a token.

The token reaches the child in a ``--mcp-config`` file of mode 0600 in a
private directory (``mkstemp``), never on the command line, where
``/proc/PID/cmdline`` shows it to every local user. The file is removed when
the run ends (or when it fails to start).

Tokens are looked up by their SHA-256 digest: the dict lookup then compares
digests, never the secret itself, so its timing says nothing about a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: The key of our server in the MCP config: tools are ``mcp__cc_executor__NAME``.
SERVER_NAME = "cc_executor"
TOOL_NAME = "approve"
PROMPT_TOOL = f"mcp__{SERVER_NAME}__{TOOL_NAME}"
#: Revoked tokens remembered (to refuse them by name rather than as unknown).
REVOKED_KEPT = 4096


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(eq=False)
class Grant:
    """The credential of one run. ``execution_id`` is set once the child runs."""

    token: str = field(repr=False)
    project_id: str
    config_path: str | None = None
    execution_id: str | None = None
    created_at: float = field(default_factory=time.time)
    revoked: bool = False


def own_mcp_url(host: str, port: int, tls: bool) -> str:
    """The URL of our own ``/mcp`` for a child on this machine: a wildcard bind
    is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/mcp"


def mcp_config(url: str, token: str) -> dict[str, object]:
    """The ``--mcp-config`` document naming our ``/mcp`` (Claude Code's ``http`` type)."""
    return {
        "mcpServers": {
            SERVER_NAME: {
                "type": "http",
                "url": url,
                "headers": {"Authorization": f"Bearer {token}"},
            }
        }
    }


def write_config(url: str, token: str) -> str:
    """Write the config to a new file of mode 0600; its path."""
    fd, path = tempfile.mkstemp(prefix="cc-executor-mcp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(mcp_config(url, token), handle)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


class Grants:
    """Every live grant, by token digest, and the recently revoked ones."""

    def __init__(self) -> None:
        self._live: dict[str, Grant] = {}
        self._revoked: OrderedDict[str, float] = OrderedDict()

    def mint(self, project_id: str, url: str) -> Grant:
        """A new grant with its config file written. OSError when the file cannot be."""
        token = secrets.token_urlsafe(32)
        grant = Grant(token=token, project_id=project_id)
        grant.config_path = write_config(url, token)
        self._live[digest(token)] = grant
        return grant

    def find(self, token: str) -> Grant | None:
        """The live grant of ``token``, or None."""
        return self._live.get(digest(token))

    def is_run_token(self, token: str) -> bool:
        """Whether ``token`` is, or was, a per-run credential."""
        key = digest(token)
        return key in self._live or key in self._revoked

    def revoke(self, grant: Grant) -> None:
        """End the grant and remove its config file; safe to call twice."""
        key = digest(grant.token)
        if self._live.pop(key, None) is None and grant.revoked:
            return
        grant.revoked = True
        self._revoked[key] = time.time()
        while len(self._revoked) > REVOKED_KEPT:
            self._revoked.popitem(last=False)
        if grant.config_path is not None:
            try:
                os.unlink(grant.config_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.error("cannot remove the MCP config %s: %s", grant.config_path, exc)

    def revoke_all(self) -> None:
        for grant in list(self._live.values()):
            self.revoke(grant)
