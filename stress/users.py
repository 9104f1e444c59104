"""The harness's users. Each task is one scenario; each check in it is its own
reported request (``verify: ...``), so the web UI shows where a run failed.

- :class:`ControlUser`: the seed's check: PAUSE, RESUME and CANCEL a long job.
- :class:`StreamUser`: output-heavy commands; time to first output, throughput, drops.
- :class:`JobUser`: a plain command run to completion (the concurrency proof).

ReconnectUser and AgentUser, which need more than the core, are in
:mod:`stress.capability_users`.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from locust import between, constant, task

from service.process import procfs
from stress import metrics
from stress.rpc_user import COMPLETED, RpcUser, StepFailed

OUTPUT = "process.output"
#: After PAUSE replies, output may still arrive: bytes written before the stop
#: and read from the pipe a moment later. The pause counts from the first quiet
#: spell this long (within PAUSE_SETTLE_MAX_S); only seq numbers past the
#: server's ``last_seq`` at that point count as output while paused.
PAUSE_QUIET_S = 0.3
PAUSE_SETTLE_MAX_S = 3.0


def ticker(lines: int, interval_s: float, word: str = "tick") -> list[str]:
    """argv of a job printing ``word 1`` .. ``word N``, one line per interval."""
    loop = f'do echo {word} "$i"; i=$((i+1)); sleep {interval_s}; done'
    script = f'i=1; while [ "$i" -le {lines} ]; {loop}'
    return ["sh", "-c", script]


def output_text(events: list[dict[str, Any]]) -> str:
    return "".join(str(e["params"].get("data", "")) for e in events if e.get("method") == OUTPUT)


def last_seq(events: list[dict[str, Any]], default: int = 0) -> int:
    seqs = [int(e["params"].get("seq", 0)) for e in events if e.get("method") == OUTPUT]
    return max(seqs, default=default)


class ControlUser(RpcUser):
    """Start a long job, PAUSE it, check it is silent and stopped, RESUME it,
    check output resumes, CANCEL it, check it ends ``cancelled`` and its
    group is gone."""

    wait_time = between(0.5, 1.5)

    @task
    def pause_resume_cancel(self) -> None:
        run = self.settings
        lines = max(1, int(run.job_s * 10))
        try:
            started = self.execute({"argv": ticker(lines, 0.1), "timeout": run.job_s + 60})
        except StepFailed:
            return
        execution_id, pgid = started["execution_id"], int(started.get("pgid") or 0)
        try:
            self.scenario(execution_id, pgid)
        except StepFailed:
            pass  # reported by the step that failed
        finally:
            if execution_id in self.live:
                self.cancel_quietly(self.client, execution_id)

    def scenario(self, execution_id: str, pgid: int) -> None:
        run = self.settings
        with self.step("verify: first output") as step:
            event, _ = self.wait_event(execution_id, {OUTPUT}, 10)
            if event is None:
                step.fail("no output within 10 s")
        self.wait_event(execution_id, set(), run.run_before_pause_s)  # let it run

        self.call("control", {"type": "PAUSE", "execution_id": execution_id})
        with self.step("verify: group stopped") as step:
            # The contract: when PAUSE replies, every process of the group is
            # stopped. Members are visible when the server runs on this machine.
            stopped, members = procfs.group_stopped(pgid) if pgid else (True, 0)
            if members and not stopped:
                step.fail(f"process group {pgid} has members not stopped")
            step.response_length = members
        self.settle(execution_id)
        status = self.call("status", {"execution_id": execution_id})
        paused_seq = int(status.get("last_seq") or 0)
        with self.step("verify: status paused") as step:
            if status.get("state") != "paused":
                step.fail(f"status says {status.get('state')!r}, not 'paused'")
        with self.step("verify: paused silent") as step:
            event, seen = self.wait_event(execution_id, {COMPLETED}, run.pause_hold_s)
            step.waited()
            if event is not None:
                step.fail(f"execution ended while paused: {event['params']}")
            late = [
                e for e in seen if e.get("method") == OUTPUT and e["params"]["seq"] > paused_seq
            ]
            if late:
                step.fail(f"{len(late)} output chunks while paused (seq > {paused_seq})")
        status = self.call("status", {"execution_id": execution_id})
        with self.step("verify: seq still while paused") as step:
            if int(status.get("last_seq") or 0) != paused_seq or status.get("state") != "paused":
                step.fail(
                    f"while paused the server went from seq {paused_seq} to "
                    f"{status.get('last_seq')} ({status.get('state')})"
                )

        self.call("control", {"type": "RESUME", "execution_id": execution_id})
        with self.step("verify: output resumed") as step:
            event, _ = self.wait_event(execution_id, {OUTPUT, COMPLETED}, 5)
            if event is None or event.get("method") != OUTPUT:
                step.fail(f"no output within 5 s of RESUME ({event and event['params']})")
            if event["params"]["seq"] <= paused_seq:
                step.fail(f"seq {event['params']['seq']} after RESUME is not past {paused_seq}")

        self.call("control", {"type": "CANCEL", "execution_id": execution_id})
        with self.step("verify: cancelled") as step:
            event, _ = self.wait_event(execution_id, {COMPLETED}, run.cleanup_timeout_s)
            if event is None:
                step.fail(f"no {COMPLETED} within {run.cleanup_timeout_s} s of CANCEL")
            if event["params"].get("status") != "cancelled":
                step.fail(f"completed with {event['params'].get('status')!r}, not 'cancelled'")
        self.finished(execution_id)
        self.verify_group_gone(pgid)

    def settle(self, execution_id: str) -> None:
        """Read output until none has come for PAUSE_QUIET_S (or PAUSE_SETTLE_MAX_S)."""
        deadline = time.monotonic() + PAUSE_SETTLE_MAX_S
        while time.monotonic() < deadline:
            event, _ = self.wait_event(execution_id, {OUTPUT, COMPLETED}, PAUSE_QUIET_S)
            if event is None or event.get("method") == COMPLETED:
                return


class StreamUser(RpcUser):
    """Run an output-heavy command; report time to first output and the whole
    stream, and check that what arrived is what the server counted."""

    wait_time = constant(0.5)

    def command(self) -> tuple[list[str], float | None, str]:
        """argv, timeout, and the status the run must end with."""
        run = self.settings
        if run.stream_mode == "flood":
            # argv ["sh", "-c", ...] rather than shell: true, which servers refuse
            # by default: the harness must not need a weaker server to run.
            return ["sh", "-c", f"yes | pv -qL {run.flood_rate}"], run.flood_s, "timed_out"
        return ["seq", "1", str(run.seq_lines)], None, "completed"

    @task
    def stream(self) -> None:
        argv, timeout, expected = self.command()
        params: dict[str, Any] = {"argv": argv}
        if timeout is not None:
            params["timeout"] = timeout
        started_at = time.perf_counter()
        try:
            execution_id = self.execute(params)["execution_id"]
        except StepFailed:
            return
        try:
            self.consume(execution_id, started_at, expected)
        except StepFailed:
            pass
        finally:
            if execution_id in self.live:
                self.cancel_quietly(self.client, execution_id)

    def consume(self, execution_id: str, started_at: float, expected: str) -> None:
        run = self.settings
        limit_s = (run.flood_s if run.stream_mode == "flood" else 60) + 30
        nbytes = lines = gaps = 0
        seq = 0
        first_ms: float | None = None
        tail = ""
        completed: dict[str, Any] | None = None
        with self.step("stream: complete") as step:
            deadline = time.monotonic() + limit_s
            while completed is None:
                event = self.client.next_event(execution_id, deadline - time.monotonic())
                if event is None:
                    step.fail(f"no {COMPLETED} within {limit_s:.0f} s")
                if event.get("method") == COMPLETED:
                    completed = event["params"]
                    break
                if event.get("method") != OUTPUT:
                    continue
                params = event["params"]
                if first_ms is None:
                    first_ms = (time.perf_counter() - started_at) * 1000
                    self.report("stream: first output", first_ms)
                data = str(params.get("data", ""))
                nbytes += len(data.encode())
                lines += data.count("\n")
                if params["seq"] != seq + 1:
                    gaps += 1
                seq = params["seq"]
                tail = (tail + data)[-64:]
            step.response_length = nbytes
            if completed.get("status") != expected:
                step.fail(f"ended {completed.get('status')!r}, expected {expected!r}")
        self.finished(execution_id)
        seconds = time.perf_counter() - started_at
        dropped = int(completed.get("dropped") or 0)
        metrics.record_stream(
            nbytes=nbytes,
            lines=lines,
            seconds=seconds,
            dropped=dropped,
            gaps=gaps,
            first_output_ms=first_ms or 0,
        )
        with self.step("verify: stream intact") as step:
            step.response_length = nbytes
            if dropped == 0 and gaps:
                step.fail(f"{gaps} seq gaps but the server dropped nothing")
            if dropped == 0 and nbytes != int(completed.get("stdout_bytes") or 0):
                step.fail(
                    f"received {nbytes} bytes, server counted {completed.get('stdout_bytes')}"
                )
            if (
                run.stream_mode == "seq"
                and dropped == 0
                and not tail.endswith(f"\n{run.seq_lines}\n")
            ):
                step.fail(f"seq output does not end with {run.seq_lines}: {tail[-20:]!r}")


class JobUser(RpcUser):
    """Run ``--job-argv`` to completion, again and again: one ``job`` request
    per run, timed from ``execute`` to ``process.completed``."""

    wait_time = constant(0)

    @task
    def job(self) -> None:
        try:
            execution_id = self.execute({"argv": shlex.split(self.settings.job_argv)})[
                "execution_id"
            ]
        except StepFailed:
            return
        try:
            with self.step("job") as step:
                event, _ = self.wait_event(
                    execution_id, {COMPLETED}, self.settings.rpc_timeout_s + 60
                )
                if event is None:
                    step.fail(f"no {COMPLETED}")
                self.finished(execution_id)
                if event["params"].get("status") != "completed":
                    step.fail(f"ended {event['params'].get('status')!r}")
        except StepFailed:
            pass
        finally:
            if execution_id in self.live:
                self.cancel_quietly(self.client, execution_id)
