"""The one typed settings object of the service.

Built once at the entry point (``cc-executor serve``) and passed down; nothing
reads the environment at import time. Every field can be set from the
environment with the prefix ``CC_EXECUTOR_`` (``CC_EXECUTOR_KILL_GRACE_S=2``)
or from a ``.env`` file in the working directory. Units are in the names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from service.settings_children import ChildrenSettings
from service.settings_cluster import ClusterSettings
from service.settings_errors import SettingsConflict
from service.store_url import StoreUrl

DEFAULT_PASS_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_*",
    "TERM",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_*",
    "CLAUDE_*",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
)


StrList = Annotated[list[str], NoDecode]
PathList = Annotated[list[Path], NoDecode]


def _split_list(value: object) -> object:
    """Environment lists are JSON (``["a", "b"]``) or comma-separated (``a,b``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def default_data_dir() -> Path:
    """A per-user state directory: ``$XDG_STATE_HOME/cc-executor``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cc-executor"


class Settings(ChildrenSettings, ClusterSettings):
    """Every knob of the service, with its unit in its name."""

    model_config = SettingsConfigDict(
        env_prefix="CC_EXECUTOR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- network -----------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8003, ge=0, le=65535, description="TCP port to bind; 0 picks a free one.")
    ssl_certfile: Path | None = Field(
        None, description="PEM certificate; with ssl_keyfile, serve wss:// and https://."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key for ssl_certfile.")
    token: SecretStr | None = Field(
        None,
        description="Shared secret clients must present (Authorization: Bearer or ?token=). "
        "Empty means no authentication.",
    )
    token_file: Path | None = Field(
        None, description="File holding the token (first line); used when token is unset."
    )
    allowed_origins: StrList = Field(
        default_factory=list,
        description="Browser origins allowed besides the server's own host; '*' allows any.",
    )

    # --- limits ------------------------------------------------------------
    max_connections: int = Field(100, ge=1, description="WebSocket connections in total.")
    max_connections_per_ip: int = Field(
        50, ge=1, description="WebSocket connections from one client address."
    )
    max_executions_per_connection: int = Field(
        10, ge=1, description="Live executions one connection may own."
    )
    max_executions: int = Field(200, ge=1, description="Live executions in the whole service.")
    max_frame_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest inbound WebSocket frame; larger closes 1009."
    )
    max_line_bytes: int = Field(
        1024 * 1024,
        ge=64,
        description="Longest output line kept; longer lines are cut and flagged truncated.",
    )
    max_pending_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Outbound bytes queued per connection before output chunks are dropped.",
    )
    rate_limit_per_s: float = Field(
        200.0, gt=0, description="Requests per second per connection (token bucket refill)."
    )
    rate_limit_burst: int = Field(400, ge=1, description="Token bucket size per connection.")
    handshake_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to complete the HTTP/WebSocket handshake."
    )
    ws_ping_interval_s: float = Field(
        20.0, gt=0, description="Interval between WebSocket pings to notice dead peers."
    )
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="Time to wait for a pong before the peer is declared dead."
    )
    idle_timeout_s: float = Field(
        300.0,
        ge=1,
        description="A connection that sends no request for this long, and owns no live "
        "execution, follows no project and waits on nothing, is closed with 4001.",
    )

    # --- processes ---------------------------------------------------------
    kill_grace_s: float = Field(
        5.0, ge=0, description="Time between SIGTERM and SIGKILL in the kill ladder."
    )
    default_timeout_s: float | None = Field(
        None, gt=0, description="Wall-clock timeout of an execution that sets none; empty: none."
    )
    max_timeout_s: float = Field(
        24 * 3600.0, gt=0, description="Largest timeout a request may ask for."
    )
    detach_grace_s: float = Field(
        30.0,
        ge=0,
        description="How long executions of a dropped connection live before they are cancelled.",
    )
    pause_confirm_timeout_s: float = Field(
        5.0, gt=0, description="How long PAUSE waits for every process of the group to stop."
    )
    exit_drain_timeout_s: float = Field(
        2.0,
        gt=0,
        description="After the group is gone, how long to wait for pipes held by escaped "
        "processes before closing them.",
    )
    flush_interval_s: float = Field(
        0.005,
        gt=0,
        description="A pending partial batch is sent at most this long after its first byte.",
    )
    flush_bytes: int = Field(
        64 * 1024, ge=1024, description="A batch is sent as soon as it holds this many bytes."
    )
    read_chunk_bytes: int = Field(
        256 * 1024, ge=4096, description="Size of each read from a child's pipe."
    )
    allow_shell: bool = Field(
        False, description="Honour shell: true (run through /bin/sh -c) when no allow-list is set."
    )
    allowed_commands: StrList = Field(
        default_factory=list,
        description="Executable names or absolute paths that may run; empty allows all. "
        "The seeds' ALLOWED_COMMANDS is an alias; both set and different: exit 2.",
    )
    pass_env: StrList = Field(
        default_factory=lambda: list(DEFAULT_PASS_ENV),
        description="Names (shell-style patterns) of the server's environment passed to children.",
    )
    finished_kept: int = Field(
        1000, ge=0, description="Finished executions kept in memory for status and control."
    )

    # --- store -------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for the SQLite store (created on start).",
    )
    store_enabled: bool = Field(True, description="Keep transcripts and history in the store.")
    store_url: StoreUrl = Field(
        None, description="Unset: SQLite in data_dir; postgresql://USER@HOST:PORT/DB: PostgreSQL."
    )
    store_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long a request (execute: its row) waits for the store."
    )
    max_transcript_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Transcript bytes stored per execution."
    )
    retention_days: float = Field(
        30.0, gt=0, description="Finished executions older than this are deleted."
    )
    max_store_bytes: int = Field(
        2 * 1024**3, ge=1024 * 1024, description="Store size past which the oldest are deleted."
    )
    retention_interval_s: float = Field(
        600.0, gt=0, description="How often the retention task runs."
    )
    retention_min_age_s: float = Field(
        600.0,
        ge=0,
        description="Finished executions and history younger than this are never deleted "
        "to meet max_store_bytes (the store then reports over_cap).",
    )
    store_queue_chunks: int = Field(
        10000, ge=100, description="Chunks queued for the store writer before back-off."
    )

    # --- projects and agents ----------------------------------------------
    project_roots: PathList = Field(
        default_factory=lambda: [Path.home()],
        description="Directories inside which projects may be registered.",
    )
    max_projects: int = Field(
        100, ge=1, description="Projects that may be registered; project.create beyond is -32001."
    )
    claude_bin: str = Field("claude", description="The Claude Code CLI to run for agents.")
    claude_extra_args: StrList = Field(
        default_factory=list, description="Extra flags passed to every agent run."
    )
    max_agent_line_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Longest stream-json line an agent may print."
    )
    agent_approvals: Literal["none", "clients"] = Field(
        "none",
        description="Default of agent.execute's approvals: none (tools needing permission are "
        "denied) or clients (each permission is asked of the run's clients).",
    )
    permission_timeout_s: float = Field(
        300.0, ge=1, description="A permission request no client answers is denied after this."
    )

    # --- observability -----------------------------------------------------
    metrics_enabled: bool = Field(
        True,
        description="Serve Prometheus metrics at /metrics (same token as /health); "
        "false: /metrics is 404.",
    )
    min_free_disk_bytes: int = Field(
        1024**3,
        ge=0,
        description="Free disk under data_dir below which /health reports degraded.",
    )
    claude_check_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Time /health gives `CLAUDE_BIN --version` to answer."
    )
    claude_check_interval_s: float = Field(
        60.0, ge=0, description="How long /health reuses the Claude CLI check; 0: every time."
    )

    # --- logging -----------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="JSON lines (python-json-logger) or plain text."
    )

    @field_validator(
        "allowed_origins",
        "allowed_commands",
        "pass_env",
        "project_roots",
        "claude_extra_args",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("cgroup_root")
    @classmethod
    def _cgroup_root(cls, value: str) -> str:
        value = value.strip() or "auto"
        if value not in ("auto", "off") and not value.startswith("/"):
            raise ValueError("must be auto, off or an absolute path")
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, values: Any) -> Any:
        """A setting given as an empty string takes its default (``unset`` for an
        optional one): ``CC_EXECUTOR_TOKEN_FILE=`` in a compose file or a .env
        template. Lists are the exception: empty is the empty list."""
        if not isinstance(values, dict):
            return values
        scalar = {
            name
            for name, field in cls.model_fields.items()
            if get_origin(field.annotation) is not list
        }
        return {
            key: value
            for key, value in values.items()
            if not (key in scalar and isinstance(value, str) and not value.strip())
        }

    @field_validator("ssl_certfile", "ssl_keyfile", "token_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.exists():
            raise ValueError(f"no such file: {value}")
        if not value.is_file():
            raise ValueError(f"not a file: {value}")
        if not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}: permission denied")
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "CC_EXECUTOR_SSL_CERTFILE (--ssl-certfile) and CC_EXECUTOR_SSL_KEYFILE "
                "(--ssl-keyfile) go together: set both or neither"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def resolved_token(self) -> str | None:
        """The configured token, from ``token`` or else ``token_file``; None when unset."""
        if self.token is not None and self.token.get_secret_value():
            return self.token.get_secret_value()
        if self.token_file is not None:
            lines = self.token_file.read_text(encoding="utf-8").splitlines()
            value = lines[0].strip() if lines else ""
            return value or None
        return None

    def with_seed_aliases(self, environ: Mapping[str, str]) -> Settings:
        """These settings with the seeds' own variable names applied.

        The seed tasks name the allow-list ``ALLOWED_COMMANDS``; it is honoured
        as an alias of ``CC_EXECUTOR_ALLOWED_COMMANDS``. Both given and
        different: :class:`SettingsConflict`, since running with either one
        could run a program the operator meant to refuse."""
        alias = environ.get("ALLOWED_COMMANDS")
        if alias is None:
            return self
        wanted = Settings(**{**self._explicit(), "allowed_commands": alias}).allowed_commands
        if "allowed_commands" in self.model_fields_set and wanted != self.allowed_commands:
            raise SettingsConflict(
                "ALLOWED_COMMANDS and CC_EXECUTOR_ALLOWED_COMMANDS are both set and differ "
                f"({','.join(wanted)} vs {','.join(self.allowed_commands)}): set only one"
            )
        return Settings(**{**self._explicit(), "allowed_commands": wanted})

    def _explicit(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}

    def limits(self) -> dict[str, object]:
        """The limits a client may want to know, as shown by ``/health``."""
        return {
            "max_connections": self.max_connections,
            "max_executions": self.max_executions,
            "max_executions_per_connection": self.max_executions_per_connection,
            "max_line_bytes": self.max_line_bytes,
            "max_pending_bytes": self.max_pending_bytes,
            "max_frame_bytes": self.max_frame_bytes,
            "max_timeout_s": self.max_timeout_s,
            "max_projects": self.max_projects,
            "idle_timeout_s": self.idle_timeout_s,
        }
