"""The user of a cluster: one execution driven from two nodes.

:class:`ClusterUser` keeps two sessions: its own node's (``--host`` number
:attr:`~stress.rpc_user.RpcUser.node`, where the job runs) and the next
node's (``other``), through which it ``attach``es mid-stream and sends
PAUSE, RESUME and CANCEL. The server forwards those to the node that runs
the job; the checks look at their effects from both sides. With a single
host it needs two: it is recorded as skipped and stops.

Request names, as the web UI shows them: ``connect (other node)``,
``attach (other node)``, ``attach: first replayed chunk`` (from sending
``attach`` to the first ``process.output`` it replays), ``control (other
node)`` (gated like ``control``), and one ``verify: ...`` per check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from locust import between, task

from service.process import procfs
from stress.attached import Stream
from stress.rpc_client import RpcClient
from stress.rpc_user import COMPLETED, RpcUser, StepFailed
from stress.settings import hosts
from stress.users import OUTPUT, ticker

#: The job prints ``tick N`` every TICK_S.
TICK_S = 0.1
#: After PAUSE replies, output already read may still arrive for this long.
PAUSE_SETTLE_S = 0.5


class ClusterUser(RpcUser):
    """Start a job on this user's node; from the next node attach (replay
    from seq 1, then live), PAUSE, RESUME and CANCEL it, checking each
    effect."""

    wait_time = between(0.5, 1.5)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.other: RpcClient | None = None

    def on_start(self) -> None:
        if len(hosts(self.host)) < 2:
            self.skip("needs two hosts or more in --host (the nodes, comma-separated)")
        super().on_start()

    def on_stop(self) -> None:
        super().on_stop()
        if self.other is not None:
            self.other.close()

    def connect_other(self) -> RpcClient:
        """The session on the next node, (re)connected, reported as ``connect (other node)``."""
        if self.other is not None and self.other.connected:
            return self.other
        self.other = self.new_client(self.node + 1)
        with self.step("connect (other node)") as step:
            session = self.other.connect()
            step.response_length = len(session.capabilities)
        return self.other

    @task
    def across_nodes(self) -> None:
        if not self.has("attach"):
            self.skip("the server does not announce 'attach'")
        run = self.settings
        try:
            other = self.connect_other()
            lines = max(1, int(run.job_s / TICK_S))
            started = self.execute({"argv": ticker(lines, TICK_S), "timeout": run.job_s + 60})
        except StepFailed:
            return
        execution_id, pgid = started["execution_id"], int(started.get("pgid") or 0)
        try:
            self.scenario(other, execution_id, pgid)
        except StepFailed:
            pass  # reported by the step that failed
        finally:
            other.forget(execution_id)
            if execution_id in self.live:
                self.cancel_quietly(self.client, execution_id)

    def other_call(self, method: str, params: dict[str, Any], name: str) -> dict[str, Any]:
        assert self.other is not None
        with self.step(name) as step:
            reply = self.other.call(method, params)
            step.response_length = reply.size
        result = reply.message.get("result")
        return result if isinstance(result, dict) else {"result": result}

    def read_other(
        self,
        execution_id: str,
        stream: Stream,
        until_s: float,
        done: Callable[[Stream], bool] = lambda stream: False,
    ) -> None:
        """Take the other session's events into ``stream`` for ``until_s``,
        or until the job completes or ``done(stream)``."""
        assert self.other is not None
        deadline = time.monotonic() + until_s
        while stream.completed is None and not done(stream):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event = self.other.next_event(execution_id, remaining)
            if event is None:
                return
            stream.take(event)

    def scenario(self, other: RpcClient, execution_id: str, pgid: int) -> None:
        run = self.settings
        with self.step("verify: first output") as step:
            event, _ = self.wait_event(execution_id, {OUTPUT}, 10)
            if event is None:
                step.fail("no output within 10 s")
        self.wait_event(execution_id, set(), run.run_before_pause_s)  # mid-stream

        stream = Stream()
        sent = time.perf_counter()
        self.other_call(
            "attach", {"execution_id": execution_id, "since_seq": 0}, "attach (other node)"
        )
        with self.step("attach: first replayed chunk") as step:
            step.started = sent
            event = other.next_event(execution_id, run.rpc_timeout_s)
            if event is None:
                step.fail(f"nothing replayed within {run.rpc_timeout_s} s")
            stream.take(event)
            if event.get("method") != OUTPUT:
                step.fail(f"first event after attach is {event.get('method')}, not output")
        with self.step("verify: attached stream intact") as step:
            self.read_other(execution_id, stream, run.run_before_pause_s)
            step.waited()  # the job prints at its own pace
            step.response_length = len(stream.seqs)
            problem = stream.problem()
            if problem:
                step.fail(problem)

        self.other_call(
            "control", {"type": "PAUSE", "execution_id": execution_id}, "control (other node)"
        )
        with self.step("verify: group stopped (other node's PAUSE)") as step:
            # When PAUSE replies every member is stopped, whichever node asked.
            stopped, members = procfs.group_stopped(pgid) if pgid else (True, 0)
            if members and not stopped:
                step.fail(f"process group {pgid} has members not stopped")
            step.response_length = members
        with self.step("verify: output settles after PAUSE") as step:
            # Output read before the stop may still arrive; then nothing may.
            self.read_other(execution_id, stream, PAUSE_SETTLE_S)
            step.waited()
        paused_seq = stream.last_seq
        status = self.other_call("status", {"execution_id": execution_id}, "status (other node)")
        with self.step("verify: status paused (other node)") as step:
            if status.get("state") != "paused":
                step.fail(f"status on the other node says {status.get('state')!r}")
        with self.step("verify: paused silent (both nodes)") as step:
            self.read_other(execution_id, stream, run.pause_hold_s)
            _, seen = self.wait_event(execution_id, set(), 0.2)
            step.waited()
            late = [
                e for e in seen if e.get("method") == OUTPUT and e["params"]["seq"] > paused_seq
            ]
            if stream.last_seq != paused_seq or late or stream.completed is not None:
                step.fail(
                    f"while paused: seq {paused_seq} -> {stream.last_seq} on the other node, "
                    f"{len(late)} late chunks here, completed {stream.completed}"
                )

        self.other_call(
            "control", {"type": "RESUME", "execution_id": execution_id}, "control (other node)"
        )
        with self.step("verify: output resumed (other node)") as step:
            self.read_other(execution_id, stream, 5, lambda seen: seen.last_seq > paused_seq)
            if stream.last_seq <= paused_seq:
                step.fail(f"no output past seq {paused_seq} within 5 s of RESUME")

        self.other_call(
            "control", {"type": "CANCEL", "execution_id": execution_id}, "control (other node)"
        )
        with self.step("verify: cancelled (both nodes)") as step:
            self.read_other(execution_id, stream, run.cleanup_timeout_s)
            event, _ = self.wait_event(execution_id, {COMPLETED}, run.cleanup_timeout_s)
            for side, completed in (
                ("other node", stream.completed),
                ("this node", event and event["params"]),
            ):
                if completed is None:
                    step.fail(f"no {COMPLETED} on {side} within {run.cleanup_timeout_s} s")
                if completed.get("status") != "cancelled":
                    step.fail(f"{side}: completed {completed.get('status')!r}, not 'cancelled'")
        self.finished(execution_id)
        with self.step("verify: attached stream intact") as step:
            step.response_length = len(stream.seqs)
            problem = stream.problem()
            if problem:
                step.fail(problem)
        self.verify_group_gone(pgid)
