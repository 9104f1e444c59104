"""What a node does for another: the operations behind :mod:`service.cluster.rpc`.

- ``control`` ``{execution_id, type}``: PAUSE, RESUME or CANCEL of an
  execution of this node, with the same checks and effect as the wire's
  ``control`` (the PAUSE answers once every process of the group is stopped);
- ``input`` ``{execution_id, data, eof}``: as the wire's ``input``;
- ``execute`` ``{params, connection}``: start an execution here for a client
  of the asking node (``cluster_remote_execute`` must allow it); its owner is
  a :class:`RemoteOwner` standing for that client, which follows the output
  from the store;
- ``own`` ``{execution_id, connection}``: a client of the asking node attached
  to an execution of this one: it owns it too (the detach timer stops), and
  the output gathered for the next batch is written now (its follower reads
  it from the store at once, not up to a batch interval later);
- ``release`` ``{connection}``: that client went away: its executions here
  get detach timers, as for a local client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidParams, InvalidState
from service.params import ExecuteParams
from service.process.spawn import build_spec
from service.process.supervisor import Supervisor
from service.protocol import Frame

logger = logging.getLogger(__name__)

CONTROL_RESULTS = {"PAUSE": "paused", "RESUME": "resumed", "CANCEL": "cancelled"}


@dataclass(frozen=True)
class RemoteOwner:
    """A client of another node that owns an execution of this one. Its frames
    are not sent anywhere from here: that node follows the store."""

    id: str

    def offer(self, frame: Frame, *, droppable: bool) -> bool:
        return True


def owner_of(node_id: str, connection_id: str) -> RemoteOwner:
    return RemoteOwner(f"{node_id}/{connection_id}")


class Ops:
    """The operations one node runs for the others."""

    def __init__(
        self, supervisor: Supervisor, node_id: str, flush: Callable[[], None] | None = None
    ) -> None:
        self.supervisor = supervisor
        self.node_id = node_id
        #: Hands the output gathered so far to the store writer (the recorder's
        #: flush): a client attaching elsewhere need not wait for the next batch.
        self.flush = flush or (lambda: None)

    async def handle(self, asker: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            if op == "control":
                return await self.control(str(args["execution_id"]), str(args["type"]).upper())
            if op == "input":
                return self.input(str(args["execution_id"]), str(args["data"]), bool(args["eof"]))
            if op == "execute":
                return await self.execute(asker, str(args["connection"]), dict(args["params"]))
            if op == "own":
                execution = self.supervisor.get(str(args["execution_id"]))
                self.supervisor.add_owner(execution, owner_of(asker, str(args["connection"])))
                self.flush()
                return {}
            if op == "release":
                self.supervisor.forget_connection(owner_of(asker, str(args["connection"])))
                return {}
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParams(f"malformed {op} request from node {asker}: {exc}") from None
        raise InvalidParams(f"unknown cluster operation {op!r}")

    async def control(self, execution_id: str, kind: str) -> dict[str, Any]:
        execution = self.supervisor.get(execution_id)
        if kind == "PAUSE":
            await execution.pause()
        elif kind == "RESUME":
            await execution.resume()
        elif kind == "CANCEL":
            await execution.cancel("cancelled by a client of another node")
        else:
            raise InvalidParams(f"unknown control type {kind!r}")
        execution.log.info("control %s (forwarded)", kind)
        return {"status": CONTROL_RESULTS[kind], "execution_id": execution.id}

    def input(self, execution_id: str, data: str, eof: bool) -> dict[str, Any]:
        execution = self.supervisor.get(execution_id)
        if execution.state.is_final:
            raise InvalidState(f"execution is {execution.state.value}")
        return {"written": execution.write_input(data, eof)}

    async def execute(self, asker: str, connection: str, raw: dict[str, Any]) -> dict[str, Any]:
        settings = self.supervisor.settings
        if not settings.cluster_remote_execute:
            raise InvalidParams(
                f"node {self.node_id} does not take executions from other nodes "
                "(CC_EXECUTOR_CLUSTER_REMOTE_EXECUTE is off)",
                {"node": self.node_id},
                name="NODE_NOT_ALLOWED",
            )
        params = ExecuteParams.model_validate(raw)
        spec = build_spec(params, settings)
        try:
            execution = await self.supervisor.start(spec, owner_of(asker, connection))
        except OSError as exc:
            raise InvalidParams(
                f"cannot execute on node {self.node_id}: {exc.strerror or exc}",
                {"errno": exc.errno, "node": self.node_id},
                name="EXEC_FAILED",
            ) from None
        execution.log.info("started for a client of another node", extra={"from_node": asker})
        return {
            "status": "started",
            "execution_id": execution.id,
            "pid": execution.pid,
            "pgid": execution.pgid,
            "node": self.node_id,
        }

    def forget_node(self, node_id: str) -> None:
        """``node_id`` is dead: its clients' executions here get detach timers."""
        prefix = f"{node_id}/"
        remote = {
            owner
            for owners in self.supervisor.owners.values()
            for owner in owners
            if isinstance(owner, RemoteOwner) and owner.id.startswith(prefix)
        }
        for owner in remote:
            self.supervisor.forget_connection(owner)
