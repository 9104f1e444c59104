"""The abstract Locust user of the harness, after ``locust/contrib/socketio.py``.

:class:`RpcUser` owns one :class:`~stress.rpc_client.RpcClient` and reports
every JSON-RPC call through ``events.request`` (``request_type`` ``"rpc"``,
``name`` the method) with its real response time and the size of the response
frame. Checks that are not calls (no output while paused, the group is gone)
are reported the same way through :meth:`RpcUser.step`, one request name per
check, so the web UI shows a failure exactly where it happened.

Locust's ``--host`` may name several servers, separated by commas (the nodes
of a cluster): each user connects to one of them, the users of each class in
turn (:attr:`RpcUser.node`), so a class's users spread evenly over the nodes;
a distributed run's workers start at different nodes.

Every command a user starts goes through :meth:`RpcUser.execute`, which adds
the run's orphan marker to the command's environment and remembers the
execution until it ends; :meth:`RpcUser.on_stop` cancels what is still live.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from locust import User
from locust.exception import StopUser

from service.process import procfs
from stress import metrics
from stress.nodes import next_node
from stress.rpc_client import ConnectionLost, Reply, RpcCallError, RpcClient
from stress.settings import RunSettings

logger = logging.getLogger(__name__)

REQUEST_TYPE = "rpc"
#: Terminal notifications of an execution.
COMPLETED = "process.completed"
#: At the end, the longest wait for the reply to an ``execute`` still in flight.
SETTLE_S = 5.0


class StepFailed(Exception):
    """A check or call failed; it is already reported, the iteration ends."""


class Step:
    """What a running step may set: the reported size, the failure reason, and
    the end of a deliberate wait."""

    def __init__(self) -> None:
        self.response_length = 0
        self.started = time.perf_counter()

    def waited(self) -> None:
        """The time so far was a wait the scenario asked for (a hold, a job
        running to its end), not latency: the reported time starts now, so
        that the check alone counts in the response-time percentiles."""
        self.started = time.perf_counter()

    def fail(self, reason: str) -> NoReturn:
        raise StepFailed(reason)


class RpcUser(User):
    """Base user: one WebSocket JSON-RPC session, every call reported.

    Subclasses implement tasks with :meth:`call`, :meth:`execute`,
    :meth:`step` and :meth:`wait_event`. A task that raises
    :class:`StepFailed` has already reported the failure; the task set logs
    nothing more for it.
    """

    abstract = True
    client: RpcClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = RunSettings.from_environment(self.environment)
        worker = getattr(self.environment.runner, "worker_index", 0)
        #: Which host of ``--host`` this user talks to (modulo their count).
        self.node = next_node(type(self).__name__, int(worker or 0))
        self.live: dict[str, RpcClient] = {}
        self.client = self.new_client()

    # --- connection -----------------------------------------------------------

    def new_client(self, node: int | None = None) -> RpcClient:
        """A client of host number ``node`` (default: this user's)."""
        url = self.settings.ws_url(self.host, self.node if node is None else node)
        return RpcClient(url, self.settings.token, self.settings.rpc_timeout_s)

    def on_start(self) -> None:
        self.connect()

    def connect(self) -> None:
        """(Re)connect, reported as the request ``connect``."""
        if self.client.connected:
            return
        self.client = self.new_client()
        with self.step("connect") as step:
            session = self.client.connect()
            step.response_length = len(session.capabilities)

    def has(self, *methods: str) -> bool:
        """Whether the server announced all of ``methods`` in ``connected``."""
        session = self.client.session
        return session is not None and all(m in session.capabilities for m in methods)

    def on_stop(self) -> None:
        """Cancel what this user still runs, wait for it to end, close.

        That includes what an ``execute`` still in flight when the run
        stopped started: its reply is awaited (a few seconds at most)."""
        if self.client.connected:
            for execution_id in self.client.settle(SETTLE_S):
                self.live.setdefault(execution_id, self.client)
        for execution_id, client in list(self.live.items()):
            self.cancel_quietly(client, execution_id)
        self.client.close()

    def cancel_quietly(self, client: RpcClient, execution_id: str) -> None:
        """Cancel an execution at cleanup, unreported; wait for its end."""
        self.live.pop(execution_id, None)
        try:
            client.call("control", {"type": "CANCEL", "execution_id": execution_id})
            deadline = time.monotonic() + self.settings.cleanup_timeout_s
            while time.monotonic() < deadline:
                event = client.next_event(execution_id, deadline - time.monotonic())
                if event is None or event.get("method") == COMPLETED:
                    break
        except RpcCallError as exc:
            if exc.code not in (-32003, -32005):  # already gone or finished: fine
                logger.warning("cleanup cancel of %s: %s", execution_id, exc)
        except (ConnectionLost, TimeoutError) as exc:
            logger.warning("cleanup cancel of %s: %s", execution_id, exc)
        finally:
            client.forget(execution_id)

    # --- reporting ------------------------------------------------------------

    def report(
        self,
        name: str,
        response_time_ms: float,
        response_length: int = 0,
        exception: BaseException | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=response_time_ms,
            response_length=response_length,
            exception=exception,
            context={"user": type(self).__name__},
        )

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Measure the block and report it as ``name``; a failure ends the iteration.

        Any exception in the block (a :class:`StepFailed` from
        :meth:`Step.fail`, an RPC error, a lost connection, a timeout) is
        reported as the failure of this step and re-raised as StepFailed.
        """
        step = Step()
        try:
            yield step
        except (StepFailed, RpcCallError, ConnectionLost, TimeoutError, OSError) as exc:
            elapsed_ms = (time.perf_counter() - step.started) * 1000
            self.report(name, elapsed_ms, step.response_length, exc)
            raise StepFailed(f"{name}: {exc}") from exc
        self.report(name, (time.perf_counter() - step.started) * 1000, step.response_length)

    def call(
        self, method: str, params: dict[str, Any] | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """One reported RPC call (name: the method unless given); its result."""
        with self.step(name or method) as step:
            reply: Reply = self.client.call(method, params)
            step.response_length = reply.size
        result = reply.message.get("result")
        return result if isinstance(result, dict) else {"result": result}

    # --- executions -------------------------------------------------------------

    def execute(self, params: dict[str, Any], method: str = "execute") -> dict[str, Any]:
        """``execute`` (or ``agent.execute``) with the run marker in ``env``.

        Reconnects first when the connection was lost (a restarted server), so
        one lost socket fails one scenario, not every later one.
        """
        if not self.client.connected:
            self.connect()
        params = dict(params)
        if method == "execute":
            params["env"] = {**(params.get("env") or {}), **self.settings.marker_env()}
        result = self.call(method, params)
        execution_id = result.get("execution_id")
        if not isinstance(execution_id, str):
            raise StepFailed(f"{method}: no execution_id in {result}")
        self.live[execution_id] = self.client
        return result

    def verify_group_gone(self, pgid: int | None, within_s: float = 2) -> None:
        """A step that fails when process group ``pgid`` still has members
        ``within_s`` after its execution ended (local host only)."""
        with self.step("verify: group gone") as step:
            deadline = time.monotonic() + within_s
            while pgid and procfs.group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = procfs.group_members(pgid) if pgid else []
            if left:
                step.fail(f"process group {pgid} still has {[m.pid for m in left]}")

    def finished(self, execution_id: str) -> None:
        self.live.pop(execution_id, None)
        self.client.forget(execution_id)

    def wait_event(
        self,
        execution_id: str,
        methods: set[str],
        timeout_s: float,
        client: RpcClient | None = None,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Read ``execution_id``'s notifications until one in ``methods``.

        Returns that notification (None on timeout) and every notification read
        before it, in order.
        """
        client = client or self.client
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, seen
            event = client.next_event(execution_id, remaining)
            if event is None:
                return None, seen
            if event.get("method") in methods:
                return event, seen
            seen.append(event)

    def skip(self, reason: str) -> None:
        """Record that this user cannot run here (shown as skipped, never as
        passed) and stop it."""
        metrics.record_skip(type(self).__name__, reason)
        self.client.close()
        raise StopUser()
