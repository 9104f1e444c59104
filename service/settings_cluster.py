"""The cluster's settings (issue 20): a part of :class:`service.settings.Settings`.

Kept in a module of their own so ``settings.py`` stays one screenful per
concept; :class:`Settings` inherits them, and ``docs/configuration.md`` lists
them under their own section (:mod:`service.settings_doc` reads the ``# ---``
comments of every class of the model). Pure: nothing is read at import time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

#: What a node id may hold: it names the node in logs, rows and ``execute``'s ``node``.
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class ClusterSettings(BaseSettings):
    """Settings of a node among several sharing one PostgreSQL store."""

    # --- cluster ------------------------------------------------------------
    node_id: str | None = Field(
        None,
        pattern=NODE_ID_PATTERN,
        description="This node's name in the cluster; unset: the hostname plus a short hash "
        "of data_dir (stable across restarts, unlike the port).",
    )
    node_lease_s: float = Field(
        10.0,
        ge=1,
        le=300,
        description="Heartbeat lease: renewed every third of it; a node silent for longer is "
        "declared dead and its live executions are marked lost.",
    )
    cluster_request_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How long a request forwarded to another node (control, input, execute) "
        "waits for its answer.",
    )
    cluster_remote_execute: bool = Field(
        False,
        description="Let execute name another node (execute's node parameter) to run on, "
        "and let other nodes start executions here.",
    )
