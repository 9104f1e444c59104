"""Serving an execution of another node: what the wire methods ask of the cluster.

:class:`Remote` forwards ``control`` and ``input`` to the node that runs the
execution (:mod:`service.cluster.rpc`), follows a live execution of another
node for ``attach`` (:mod:`service.cluster.follow`), and starts an execution
on another node for ``execute``'s ``node``, making the asking client its
owner there (:class:`~service.cluster.ops.RemoteOwner`) until it goes.
Nothing here applies to this node's own executions: every method answers
None (or leaves the work to the local path) for them.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from service.cluster import nodes
from service.cluster.db import ClusterDb
from service.cluster.follow import FINAL_STATES, Followers
from service.cluster.rpc import Rpc
from service.errors import InvalidParams, InvalidState
from service.outbox import OutboxClosed
from service.process.supervisor import Supervisor
from service.protocol import attached, process_error, process_started
from service.store import Store, StoreError
from service.store.attach import Subscriber
from service.store.history import get_execution

logger = logging.getLogger(__name__)

#: Remote executions whose node is remembered.
NODE_CACHE = 10000
Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


class Remote:
    """The cluster side of ``attach``, ``control``, ``input`` and ``execute``."""

    def __init__(
        self,
        store: Store,
        db: ClusterDb,
        supervisor: Supervisor,
        node_id: str,
        rpc: Rpc,
        followers: Followers,
        spawn: Spawn,
    ) -> None:
        self.store = store
        self.db = db
        self.supervisor = supervisor
        self.settings = supervisor.settings
        self.node_id = node_id
        self.rpc = rpc
        self.followers = followers
        self._spawn = spawn
        #: The ``nodes`` rows as last read (every heartbeat).
        self.view: list[dict[str, Any]] = []
        #: The node of each remote execution seen lately (it never changes).
        self._node_of: OrderedDict[str, str] = OrderedDict()
        #: Connections of this node that own executions on other nodes.
        self._remote_owned: dict[str, set[str]] = {}

    @property
    def shared(self) -> bool:
        return self.db.shared

    async def remote_record(self, execution_id: str) -> dict[str, Any] | None:
        """The store's row of ``execution_id`` when another node runs (or ran)
        it; None when it is this node's, unknown, or the store is not shared."""
        if not self.shared or execution_id in self.supervisor.live:
            return None
        if execution_id in self.supervisor.finished:
            return None
        record = await self.store.read(functools.partial(get_execution, execution_id=execution_id))
        if record is None or record.get("node") in (None, self.node_id):
            return None
        self._node_of[execution_id] = str(record["node"])
        while len(self._node_of) > NODE_CACHE:
            self._node_of.popitem(last=False)
        return record

    def node_state(self, node_id: str) -> str | None:
        for row in self.view:
            if row["id"] == node_id:
                return str(row["state"])
        return None

    async def _current_state(self, node_id: str) -> str | None:
        """``node_id``'s state; the nodes read again when it is not in the view
        (a node that joined since this one's last heartbeat)."""
        if self.node_state(node_id) is None:
            self.view = await self.db.run(nodes.all_nodes)
        return self.node_state(node_id)

    async def _reachable(self, node_id: str) -> None:
        state = await self._current_state(node_id)
        if state != "up":
            raise InvalidState(
                f"node {node_id} is {state or 'unknown to the cluster'}: it cannot be reached",
                {"node": node_id, "node_state": state},
                name="NODE_DOWN",
            )

    async def forward(
        self, execution_id: str, op: str, args: dict[str, Any]
    ) -> dict[str, Any] | None:
        """``op`` (``control``, ``input``) run by the node that runs
        ``execution_id``: its answer; None when the execution is not remote."""
        node = self._node_of.get(execution_id)
        if node is not None and self.node_state(node) == "up":
            # Known to run there (an execution never moves): that node answers,
            # finished or not, without a read of the store first.
            return await self.rpc.call(node, op, {"execution_id": execution_id, **args})
        record = await self.remote_record(execution_id)
        if record is None:
            return None
        if record["state"] in FINAL_STATES:
            reason = f": {record['reason']}" if record.get("reason") else ""
            raise InvalidState(
                f"execution is {record['state']}{reason}",
                {"execution_id": execution_id, "node": record["node"]},
            )
        await self._reachable(record["node"])
        return await self.rpc.call(record["node"], op, {"execution_id": execution_id, **args})

    async def attach(
        self, connection: Subscriber, execution_id: str, since_seq: int
    ) -> dict[str, Any] | None:
        """Follow a live execution of another node (the ``attach`` result);
        None when it is not one (this node's, finished, or unknown)."""
        record = await self.remote_record(execution_id)
        if record is None or record["state"] in FINAL_STATES:
            return None
        self._start_follow(connection, record, since_seq)
        self._own(record["node"], connection.id, "own", execution_id)
        return attached(
            execution_id,
            record["state"],
            record["pid"],
            record["pgid"],
            since_seq,
            record["last_seq"],
            replay=True,
            node=record["node"],
        )

    async def execute_on(
        self, node_id: str, connection: Subscriber, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Start an execution on ``node_id`` for ``connection``, which then
        receives its frames as if attached."""
        if not self.settings.cluster_remote_execute:
            raise InvalidParams(
                "execute on another node is not allowed here (CC_EXECUTOR_CLUSTER_REMOTE_EXECUTE)",
                {"node": node_id},
                name="NODE_NOT_ALLOWED",
            )
        if not self.shared:
            raise InvalidParams(
                f"unknown node {node_id!r}: this server is alone (SQLite store)", {"node": node_id}
            )
        state = await self._current_state(node_id)
        if state != "up":
            raise InvalidParams(
                f"node {node_id!r} is {'unknown to the cluster' if state is None else state}",
                {"node": node_id, "node_state": state},
                name="NODE_UNAVAILABLE",
            )
        result = await self.rpc.call(
            node_id, "execute", {"connection": connection.id, "params": params}
        )
        self._remote_owned.setdefault(connection.id, set()).add(node_id)
        record = {"execution_id": result["execution_id"], "state": "running"}
        connection.offer(
            process_started(result["execution_id"], result["pid"], result["pgid"]), droppable=False
        )
        self._start_follow(connection, record, 0)
        return result

    def _start_follow(self, connection: Subscriber, record: dict[str, Any], since_seq: int) -> None:
        execution_id = record["execution_id"]

        async def run() -> None:
            try:
                await self.followers.follow(connection, record, since_seq)
            except OutboxClosed:
                pass
            except StoreError as exc:
                connection.offer(
                    process_error(execution_id, f"store error: {exc}", "STORE_ERROR"),
                    droppable=False,
                )
            except Exception:
                logger.exception(
                    "following a remote execution failed", extra={"execution_id": execution_id}
                )
                connection.offer(
                    process_error(execution_id, "internal error while following", "INTERNAL"),
                    droppable=False,
                )

        self._spawn(run(), f"cluster:follow:{execution_id}")

    def _own(self, node_id: str, connection_id: str, op: str, execution_id: str) -> None:
        """Tell ``node_id`` a client here owns ``execution_id`` (its detach
        timer stops), best effort."""
        self._remote_owned.setdefault(connection_id, set()).add(node_id)

        async def tell() -> None:
            try:
                await self.rpc.call(
                    node_id, op, {"connection": connection_id, "execution_id": execution_id}
                )
            except Exception as exc:  # best effort: the follow goes on without it
                logger.info("could not register a remote owner: %s", exc, extra={"node": node_id})

        self._spawn(tell(), f"cluster:own:{execution_id}")

    def forget_connection(self, connection_id: str) -> None:
        """A client of this node went away: the nodes it owned executions on
        arm their detach timers."""
        for node_id in self._remote_owned.pop(connection_id, set()):
            if self.node_state(node_id) == "up":
                self._spawn(self._release(node_id, connection_id), f"cluster:release:{node_id}")

    async def _release(self, node_id: str, connection_id: str) -> None:
        try:
            await self.rpc.call(node_id, "release", {"connection": connection_id})
        except Exception as exc:  # the node's own detach rules still apply
            logger.info("could not release remote executions: %s", exc, extra={"node": node_id})
