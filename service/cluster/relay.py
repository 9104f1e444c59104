"""``project.subscribe`` across nodes: an agent that runs on another node,
relayed to the subscribers its project has on this one.

When ``cc_state`` announces a ``running`` execution this node does not run,
and some project here has subscribers, :class:`ProjectRelay` reads the row:
an execution of a subscribed project (an agent run) is followed from the
store like a cross-node ``attach`` (:mod:`service.cluster.follow`), through a
:class:`Fanout` that gives each frame to the project's subscribers here and
parses the agent's stream-json output into ``agent.event`` /
``agent.result`` as the running node does (:mod:`service.projects.agent`):
``project.state`` ``running`` first, then the ``process.*`` frames and the
agent's events, then (before ``process.completed``) an ``agent.result``
(synthesised, ``is_error``, when the run printed none) and ``project.state``
``idle``. A client that subscribes here while a run goes on elsewhere
(:meth:`ProjectRelay.catch_up`) hears it from that moment on, as on the node
that runs it: ``project.state`` ``running``, then what the run prints after
the subscribe (the earlier output is read too, without being sent, so that
``agent.event`` indexes and the ``agent.result`` check stay those of the run).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from service import protocol
from service.cluster.follow import Followers
from service.process.sinks import Sink
from service.projects import Projects
from service.projects.project import Project
from service.protocol import Frame
from service.store import Store, StoreError
from service.store.history import get_execution, list_executions
from service.stream_json import AgentResult, parse_lines

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


class Fanout:
    """A follower's subscriber standing for a project's subscribers on this node."""

    def __init__(self, project: Project, execution_id: str, node: str, max_event_bytes: int):
        self.id = f"project:{project.id}:{execution_id}"
        self.project = project
        self.execution_id = execution_id
        self.node = node
        self.max_event_bytes = max_event_bytes
        self.closed = False
        self.index = 0
        self.result_seen = False
        #: Output up to this seq was printed before anyone here subscribed: it
        #: is parsed (indexes, the result) but not sent.
        self.quiet_upto = 0
        self._quiet = False

    def __hash__(self) -> int:
        return hash(self.id)

    def offer(self, frame: Frame, *, droppable: bool) -> bool:
        if self._quiet:
            return True
        sinks: list[Sink] = list(self.project.subscribers)
        for sink in sinks:
            sink.offer(frame, droppable=droppable)
        return True

    async def put(self, frame: Frame) -> None:
        self._quiet = frame.method == "process.output" and frame.params["seq"] <= self.quiet_upto
        if frame.method == "process.completed":
            if not self.result_seen:
                self._missing_result(frame.params.get("status"))
            self.state("idle", last_status=frame.params.get("status"))
        self.offer(frame, droppable=frame.seq is not None)
        if frame.method == "process.output" and frame.params["type"] == "stdout":
            for raw, event in parse_lines(frame.params["data"]):
                self._event(frame.params["seq"], raw, event)

    def state(self, state: str, **extra: Any) -> None:
        snapshot = self.project.snapshot()
        snapshot.update(state=state, execution_id=self.execution_id, node=self.node, **extra)
        self.offer(protocol.frame("project.state", snapshot), droppable=False)

    def _event(self, seq: int, raw: str, event: dict[str, Any]) -> None:
        self.index += 1
        params: dict[str, Any] = {
            "execution_id": self.execution_id,
            "project_id": self.project.id,
            "seq": seq,
            "index": self.index,
        }
        if len(raw) > self.max_event_bytes:
            params["event"] = {
                key: event[key] for key in ("type", "subtype", "session_id", "uuid") if key in event
            }
            params.update(oversized=True, bytes=len(raw))
        else:
            params["event"] = orjson.Fragment(raw)
        self.offer(protocol.frame("agent.event", params), droppable=True)
        if event.get("type") == "result":
            self.result_seen = True
            result = AgentResult.from_event(event)
            status = "failed" if result.is_error else "completed"
            self._result({**result.params(), "status": status})

    def _missing_result(self, status: Any) -> None:
        self._result(
            {
                "session_id": self.project.session_id,
                "subtype": "error_no_result",
                "is_error": True,
                "cost_usd": 0.0,
                "duration_ms": 0,
                "num_turns": 0,
                "result": None,
                "errors": [f"the agent ended ({status}) on node {self.node} without a result"],
                "status": "failed" if status == "completed" else status,
            }
        )

    def _result(self, params: dict[str, Any]) -> None:
        frame = protocol.frame(
            "agent.result",
            {"execution_id": self.execution_id, "project_id": self.project.id, **params},
        )
        self.offer(frame, droppable=False)


class ProjectRelay:
    """Starts a :class:`Fanout` for each agent run of a subscribed project
    that another node starts."""

    def __init__(
        self,
        store: Store,
        projects: Projects,
        followers: Followers,
        node_id: str,
        is_local: Callable[[str], bool],
        spawn: Spawn,
    ) -> None:
        self.store = store
        self.projects = projects
        self.followers = followers
        self.node_id = node_id
        self.is_local = is_local
        self.spawn = spawn
        self._relayed: set[str] = set()
        self._reread_pending = False

    def on_projects(self) -> None:
        """A project was created or deleted on some node (``cc_projects``), or
        the bus reconnected: read the projects again (the subscribers here of
        a deleted one are told), once for a burst of notices."""
        if not self._reread_pending:
            self._reread_pending = True
            self.spawn(self._reread(), "cluster:projects")

    async def _reread(self) -> None:
        await asyncio.sleep(0)  # the rest of a burst arrives meanwhile
        self._reread_pending = False
        try:
            await self.projects.refresh()
        except StoreError as exc:
            logger.warning("cannot read the projects again: %s", exc)

    def on_state(self, execution_id: str, state: str) -> None:
        if state != "running" or execution_id in self._relayed or self.is_local(execution_id):
            return
        if not any(project.subscribers for project in self.projects.projects.values()):
            return
        self._relayed.add(execution_id)
        self.spawn(self._relay(execution_id), f"cluster:relay:{execution_id}")

    def catch_up(self, project_id: str) -> None:
        """A client here just subscribed to ``project_id``: relay the run that
        goes on elsewhere, if one does and nobody relays it yet."""
        self.spawn(self._catch_up(project_id), f"cluster:catch-up:{project_id}")

    async def _catch_up(self, project_id: str) -> None:
        live = ["starting", "running", "paused"]
        read = functools.partial(
            list_executions, states=live, project_id=project_id, limit=10, before_n=None
        )
        try:
            rows, _ = await self.store.read(read)
        except StoreError as exc:
            logger.warning("cannot look for a remote agent run: %s", exc)
            return
        for row in rows:
            execution_id = row["execution_id"]
            if execution_id in self._relayed or self.is_local(execution_id):
                continue
            self._relayed.add(execution_id)
            name = f"cluster:relay:{execution_id}"
            self.spawn(self._relay(execution_id, from_seq=row["last_seq"]), name)

    async def _relay(self, execution_id: str, from_seq: int = 0) -> None:
        """Follow the run for its project's subscribers here; output up to
        ``from_seq`` (printed before they subscribed) is not sent to them."""
        try:
            record = await self.store.read(
                functools.partial(get_execution, execution_id=execution_id)
            )
            if record is None or record.get("node") in (None, self.node_id):
                return
            project = self.projects.projects.get(record.get("project_id") or "")
            if project is None or not project.subscribers:
                return
            max_event_bytes = self.projects.max_event_frame_bytes
            fanout = Fanout(project, execution_id, str(record["node"]), max_event_bytes)
            fanout.quiet_upto = from_seq
            fanout.state("running")
            await self.followers.follow(fanout, record, 0)
        except StoreError as exc:
            logger.warning("cannot relay a remote agent run: %s", exc)
        finally:
            self._relayed.discard(execution_id)
