"""A cluster on loopback: a throwaway PostgreSQL and N ``cc-executor`` nodes
sharing it, for ``ci/stress --cluster``, ``stress/bench/cluster.py`` and the
tests.

:class:`LocalCluster` starts the database (:class:`service.client.postgres.
PostgresServer`, one fresh database), then each node with
:func:`service.client.launch.run_server`: its own data directory and log,
``CC_EXECUTOR_STORE_URL`` pointing at the database and
``CC_EXECUTOR_NODE_ID`` ``node-a``, ``node-b``, ... The nodes run in their
own sessions (a terminal's Ctrl-C reaches the launcher, which stops them in
order). :meth:`LocalCluster.close` stops the nodes (SIGTERM, their own kill
ladders) and then the database; it is safe to call twice.
"""

from __future__ import annotations

import json
import os
import string
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from service.client.launch import ServerProcess, run_server
from service.client.postgres import DURABLE_SETTINGS, FAST_SETTINGS, PostgresServer


class ClusterNotReady(RuntimeError):
    """The nodes did not all see each other up in time."""


def up_nodes(http_url: str, token: str | None) -> set[str]:
    """The nodes a node's ``/health`` shows ``up``; empty when it cannot say."""
    request = urllib.request.Request(http_url + "/health")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        document = json.load(exc)  # 503 "failing" still carries the document
    except (OSError, ValueError):
        return set()
    nodes = (document.get("cluster") or {}).get("nodes") or []
    return {str(row.get("node")) for row in nodes if row.get("state") == "up"}


def node_id(index: int) -> str:
    """``node-a``, ``node-b``, ... (the names of the compose cluster profile)."""
    return f"node-{string.ascii_lowercase[index]}"


@dataclass
class Node:
    name: str
    server: ServerProcess
    data_dir: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mcp"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalCluster:
    """``count`` nodes under ``work`` sharing one throwaway PostgreSQL.

    ``env`` is the base environment of every node (``CC_EXECUTOR_*`` settings
    included); ``durable`` keeps PostgreSQL's fsync on (benchmarks), else the
    test settings (no fsync) are used. Node logs go to ``log_dir`` (default
    ``work``) as ``node-a.log``, ...
    """

    work: Path
    count: int = 2
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    durable: bool = False
    log_dir: Path | None = None
    nodes: list[Node] = field(default_factory=list)
    postgres: PostgresServer | None = None
    store_url: str = ""

    def __enter__(self) -> Self:
        return self.open()

    def open(self) -> Self:
        """:meth:`start`; on any failure, stop what did start and re-raise."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """The database, then every node; returns once all of them listen.
        Raises PostgresUnavailable or ServerStartError (what did start is
        left for :meth:`close`)."""
        settings = DURABLE_SETTINGS if self.durable else FAST_SETTINGS
        # Its directory in the system's temporary directory, not under ``work``:
        # as root, the server runs as the postgres user, who may not enter ``work``.
        self.postgres = PostgresServer(settings=dict(settings))
        self.postgres.start()
        self.store_url = self.postgres.create_database("ccx")
        for index in range(self.count):
            self.nodes.append(self.start_node(index))
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every node's ``/health`` lists every node ``up``.

        A node learns of the others at its heartbeat, so one started a moment
        before another cannot reach it yet (-32005 "unknown to the cluster"):
        a run starts only once each node sees them all. ClusterNotReady after
        ``timeout_s``, naming what each node saw."""
        wanted = {node.name for node in self.nodes}
        deadline = time.monotonic() + timeout_s
        seen: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            for node in self.nodes:
                seen[node.name] = up_nodes(node.http_url, self.env.get("CC_EXECUTOR_TOKEN"))
            if all(wanted <= up for up in seen.values()):
                return
            time.sleep(0.2)
        raise ClusterNotReady(f"the nodes do not all see each other up: {seen}")

    def node_env(self, index: int) -> dict[str, str]:
        name = node_id(index)
        data_dir = self.work / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        env.update(
            {
                "CC_EXECUTOR_DATA_DIR": str(data_dir),
                "CC_EXECUTOR_STORE_URL": self.store_url,
                "CC_EXECUTOR_NODE_ID": name,
                "CC_EXECUTOR_LOG_FORMAT": "json",
            }
        )
        env.setdefault("CC_EXECUTOR_PROJECT_ROOTS", json.dumps([str(self.work / "projects")]))
        (self.work / "projects").mkdir(exist_ok=True)
        return env

    def start_node(self, index: int) -> Node:
        """Start (or restart, with the same data directory) node ``index``."""
        name = node_id(index)
        server = run_server(
            self.node_env(index),
            args=["--host", "127.0.0.1"],
            cwd=self.work,
            log_path=(self.log_dir or self.work) / f"{name}.log",
            timeout_s=60,
            start_new_session=True,
        )
        return Node(name, server, self.work / name)

    def close(self) -> None:
        """Stop every node, then the database; safe to call twice."""
        for node in self.nodes:
            node.server.stop()
        self.nodes.clear()
        if self.postgres is not None:
            self.postgres.close()
            self.postgres = None
