"""Who this node is, and the names derived from it. Pure code.

A node's id is ``CC_EXECUTOR_NODE_ID``, or else the hostname plus a short hash
of the data directory: stable across restarts (the port may be 0 and change),
and different for two servers of one machine that keep separate data.
"""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

from service.settings import Settings

#: LISTEN channel of the node's requests and replies: the id is hashed so any
#: id fits PostgreSQL's 63-byte identifiers and needs no quoting rules.
NODE_CHANNEL_PREFIX = "cc_node_"
#: Characters of a hostname kept in a default node id.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_node_id(data_dir: Path, hostname: str | None = None) -> str:
    """``HOST-HASH``: the hostname and 8 hex digits of the resolved data directory."""
    host = _UNSAFE.sub("-", hostname or socket.gethostname()).strip("-.")[:40] or "node"
    digest = hashlib.sha256(str(data_dir.expanduser().resolve()).encode()).hexdigest()[:8]
    return f"{host}-{digest}"


def node_id_of(settings: Settings) -> str:
    """The node id ``settings`` give, or the default one."""
    return settings.node_id or default_node_id(settings.data_dir)


def node_channel(node_id: str) -> str:
    """The ``LISTEN`` channel of ``node_id``'s requests and replies."""
    return (
        NODE_CHANNEL_PREFIX + hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()[:20]
    )
