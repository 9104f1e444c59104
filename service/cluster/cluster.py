"""This node among the others: :class:`Cluster`, built by the composition root.

It joins the ``nodes`` table at start (a lease renewed every third of
``node_lease_s`` by a task of its own, on a connection of its own), kills
what a previous life of this node left that another node already marked
lost, sweeps for nodes whose lease expired, listens on the bus, answers
other nodes' requests, and gives the wire methods what they need to serve
any execution of the cluster: :meth:`forward` (control, input),
:meth:`attach` (follow from the store), :meth:`execute_on` (start on another
node), the cluster-wide project lock, and the view ``/health`` shows.

On SQLite the cluster is this node alone: the same table, lease and lock,
no bus, nothing remote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from service.cluster import locks, nodes
from service.cluster.bus import Bus
from service.cluster.db import ClusterDb
from service.cluster.follow import Followers
from service.cluster.identity import node_channel
from service.cluster.ops import Ops
from service.cluster.reap import reap_leftovers
from service.cluster.relay import ProjectRelay
from service.cluster.remote import Remote
from service.cluster.rpc import Rpc
from service.cluster.schema import CLUSTER_MIGRATIONS, CLUSTER_NAMESPACE
from service.errors import InvalidState
from service.process.execution import Execution
from service.process.sinks import Chunk
from service.process.supervisor import Supervisor
from service.projects import Projects
from service.store import Store, StoreError
from service.store.rows import OUTPUT_CHANNEL, PROJECTS_CHANNEL, STATE_CHANNEL

logger = logging.getLogger(__name__)


class Cluster:
    """This node's part in the cluster (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        projects: Projects,
        node_id: str,
        server_id: str,
        flush: Callable[[], None] | None = None,
    ) -> None:
        settings = supervisor.settings
        self.store = store
        self.supervisor = supervisor
        self.settings = settings
        self.me = nodes.Me(
            node_id=node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            server_id=server_id,
            lease_s=settings.node_lease_s,
            max_executions=settings.max_executions,
        )
        self.db = ClusterDb(store)
        self.followers = Followers(store)
        self.ops = Ops(supervisor, node_id, flush)
        self.rpc = Rpc(
            node_id, self._send, self.ops.handle, self._spawn, settings.cluster_request_timeout_s
        )
        self.remote = Remote(
            store, self.db, supervisor, node_id, self.rpc, self.followers, self._spawn
        )
        self.relay = ProjectRelay(
            store, projects, self.followers, node_id, self._is_local, self._spawn
        )
        self.bus: Bus | None = None
        self.declared_dead = 0
        #: Projects whose cluster lock this node holds: project id -> agent execution id.
        self._locks: dict[str, str | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Since when (monotonic) every heartbeat succeeded; None after a failure.
        self._beating_since: float | None = None
        store.register_schema(CLUSTER_NAMESPACE, CLUSTER_MIGRATIONS)

    @property
    def node_id(self) -> str:
        return self.me.node_id

    @property
    def shared(self) -> bool:
        return self.db.shared

    # --- life ----------------------------------------------------------------------

    async def start(self) -> None:
        """Join (the store is open): SystemExit(1) with one line when the node id
        is held by another host or the database cannot be reached."""
        try:
            await self.db.start()
            previous = await self.db.run(lambda conn: nodes.join(conn, self.me, time.time()))
        except (nodes.NodeIdInUse, StoreError) as exc:
            logger.error("cannot join the cluster: %s", exc, extra={"node": self.node_id})
            await self.db.close()
            raise SystemExit(1) from None
        killed = await reap_leftovers(self.db, self.node_id, self.store.settings.kill_grace_s)
        logger.info(
            "joined the cluster",
            extra={
                "node": self.node_id,
                "previous_state": previous,
                "lease_s": self.me.lease_s,
                "backend": self.store.backend,
                "leftovers_killed": killed,
            },
        )
        self.supervisor.observers.append(_LockObserver(self))
        if self.shared:
            dsn = self.store.dsn
            assert dsn is not None
            self.bus = Bus(
                dsn,
                [OUTPUT_CHANNEL, STATE_CHANNEL, PROJECTS_CHANNEL, node_channel(self.node_id)],
                self._on_notify,
                self._on_reconnect,
                self.settings.store_timeout_s,
            )
            self._spawn(self.bus.run(), "cluster:bus")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bus.connected.wait(), self.settings.store_timeout_s)
        await self._beat()
        self._spawn(self._heartbeat(), "cluster:heartbeat")

    async def stop(self) -> None:
        """Leave (after every execution ended): the row says ``down``, the locks go."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.db.run(lambda conn: nodes.leave(conn, self.me, time.time()))
        except StoreError as exc:
            logger.warning("could not mark this node down: %s", exc)
        await self.db.close()
        logger.info("left the cluster", extra={"node": self.node_id})

    def _is_local(self, execution_id: str) -> bool:
        return execution_id in self.supervisor.live or execution_id in self.supervisor.finished

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        if self._closed:
            coro.close()  # the node has left: nothing more to tell anyone
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    # --- lease ---------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.me.lease_s / 3)
            try:
                await self._beat()
            except StoreError as exc:
                # The others could not renew either: judge no lease until
                # everyone had a whole lease to renew after the database is back.
                self._beating_since = None
                logger.warning("heartbeat failed: %s", exc, extra={"node": self.node_id})

    async def _beat(self) -> None:
        live = len(self.supervisor.live)
        store = self.store
        if self._beating_since is None:
            self._beating_since = time.monotonic()
        # Only a node that has renewed its own lease for a whole lease judges
        # the others': after a database outage (or this node's own start) the
        # live nodes get the time to renew before anyone is declared dead.
        judge = self.shared and time.monotonic() - self._beating_since >= self.me.lease_s

        def beat(conn: Any) -> tuple[bool, list[nodes.Death], list[dict[str, Any]]]:
            now = time.time()
            renewed = nodes.renew(conn, self.me, now, live)
            deaths = nodes.sweep(conn, self.me, now, store.notify) if judge else []
            return renewed, deaths, nodes.all_nodes(conn)

        renewed, deaths, view = await self.db.run(beat)
        self.remote.view = view
        for death in deaths:
            self.declared_dead += 1
            logger.warning(
                "declared a node dead; its live executions are lost",
                extra={
                    "dead_node": death.node_id,
                    "reason": death.reason,
                    "executions": len(death.executions),
                },
            )
            self.ops.forget_node(death.node_id)
        if not renewed:
            await self._fenced()

    async def _fenced(self) -> None:
        """Another node declared this one dead (its lease lapsed: the machine
        stalled): its executions were reported lost, so they end here too,
        and the node joins again."""
        logger.error(
            "this node was declared dead by another; cancelling its executions and rejoining",
            extra={"node": self.node_id, "executions": len(self.supervisor.live)},
        )
        for execution in list(self.supervisor.live.values()):
            with contextlib.suppress(InvalidState):
                await execution.cancel("this node was declared dead by the cluster")
        await self.db.run(lambda conn: nodes.join(conn, self.me, time.time()))
        await self.db.run(lambda conn: nodes.forget_leftovers(conn, self.node_id, None))
        self._locks.clear()

    # --- the bus -------------------------------------------------------------------

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == OUTPUT_CHANNEL:
            execution_id = payload.rpartition(":")[0]
            self.followers.on_output(execution_id)
        elif channel == STATE_CHANNEL:
            execution_id, _, state = payload.rpartition(":")
            self.followers.on_state(execution_id, state)
            self.relay.on_state(execution_id, state)
        elif channel == PROJECTS_CHANNEL:
            self.relay.on_projects()
        else:
            self.rpc.on_message(payload)

    def _on_reconnect(self) -> None:
        """What was notified while the bus was down is lost: read it all again."""
        self.followers.wake_all()
        self.relay.on_projects()

    async def _send(self, channel: str, payload: str) -> None:
        await self.db.notify(channel, payload)

    # --- projects --------------------------------------------------------------------

    async def lock_project(self, project_id: str) -> None:
        """Take ``project_id`` for an agent on this node; -32005 while an agent
        runs there on any node."""
        holder = await self.db.run(
            lambda conn: locks.take(conn, project_id, self.node_id, time.time())
        )
        if holder is not None:
            raise InvalidState(
                f"an agent is already running in this project on node {holder['node']}",
                {
                    "project_id": project_id,
                    "node": holder["node"],
                    "execution_id": holder["execution_id"],
                },
            )
        self._locks[project_id] = None

    async def bind_project(self, project_id: str, execution_id: str) -> None:
        """Name the agent's execution in the lock (what ``/health`` and a refusal show)."""
        if project_id not in self._locks:
            return  # it ended already and freed the lock
        self._locks[project_id] = execution_id
        await self.db.run(lambda conn: locks.bind(conn, project_id, self.node_id, execution_id))

    async def unlock_project(self, project_id: str) -> None:
        """Free ``project_id`` if this node holds it (its agent ended or never started)."""
        if self._locks.pop(project_id, "absent") == "absent":
            return
        try:
            await self.db.run(lambda conn: locks.release(conn, project_id, self.node_id))
        except StoreError as exc:
            logger.warning(
                "could not free a project lock: %s", exc, extra={"project_id": project_id}
            )

    async def kill_remote_agent(self, project_id: str) -> dict[str, Any] | None:
        """Cancel the agent another node runs in ``project_id`` (the ``control``
        CANCEL answer); None when no other node holds the project."""
        holder = await self.db.run(lambda conn: locks.holder(conn, project_id))
        if holder is None or holder["node"] == self.node_id or holder["execution_id"] is None:
            return None
        return await self.remote.forward(holder["execution_id"], "control", {"type": "CANCEL"})

    # --- health ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = time.time()
        view = [
            {
                "node": row["id"],
                "state": row["state"],
                "lease_left_s": round(row["expires_at"] - now, 3) if row["state"] == "up" else None,
                "heartbeat_at": row["heartbeat_at"],
                "live_executions": row["live_executions"],
                "max_executions": row["max_executions"],
                **({"reason": row["reason"]} if row.get("reason") else {}),
            }
            for row in self.remote.view
        ]
        return {
            "node": self.node_id,
            "lease_s": self.me.lease_s,
            "shared": self.shared,
            "bus": self.bus.health() if self.bus is not None else None,
            "nodes": view,
            "declared_dead": self.declared_dead,
            "requests_served": self.rpc.served,
        }


class _LockObserver:
    """Frees the cluster lock of a project when its agent ends."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def on_output(self, execution: Execution, chunk: Chunk) -> None:
        return None

    def on_transition(self, execution: Execution) -> None:
        project_id = execution.spec.project_id
        if project_id is None or not execution.state.is_final:
            return
        if project_id in self.cluster._locks:
            self.cluster._spawn(
                self.cluster.unlock_project(project_id), f"cluster:unlock:{project_id}"
            )
