"""Users that need server features beyond the executor core; each reads the
server's ``connected`` capabilities first and, when a feature is missing, is
recorded as skipped (never as passed) and stops.

- :class:`ReconnectUser`: drop the socket mid-stream, reconnect, ``attach``, nothing missing.
- :class:`AgentUser`: ``fake-claude`` agents through projects.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Any

from locust import constant, task

from stress.rpc_user import COMPLETED, RpcUser, StepFailed
from stress.users import OUTPUT, last_seq, output_text, ticker


class ReconnectUser(RpcUser):
    """Drop the connection mid-stream, reconnect, ``attach`` with the last
    seq seen, and check that every numbered line arrived exactly once."""

    wait_time = constant(0.5)

    @task
    def drop_and_attach(self) -> None:
        if not self.has("attach"):
            self.skip("the server does not announce 'attach' (durable store not there yet)")
        lines = self.settings.reconnect_lines
        try:
            execution_id = self.execute(
                {"argv": ticker(lines, 0.05, "line"), "timeout": lines * 0.05 + 60}
            )["execution_id"]
        except StepFailed:
            return
        try:
            self.scenario(execution_id, lines)
        except StepFailed:
            pass
        finally:
            if execution_id in self.live:
                self.cancel_quietly(self.live[execution_id], execution_id)

    def scenario(self, execution_id: str, lines: int) -> None:
        received: list[dict[str, Any]] = []
        with self.step("reconnect: stream before drop") as step:
            deadline = time.monotonic() + 10
            while len(received) < max(1, lines // 3):
                event, _ = self.wait_event(
                    execution_id, {OUTPUT, COMPLETED}, deadline - time.monotonic()
                )
                if event is None or event.get("method") == COMPLETED:
                    step.fail(f"stream ended or stalled after {len(received)} chunks")
                received.append(event)
            step.waited()  # the job prints at its own pace (one line per 50 ms)
        since = last_seq(received)
        with self.step("reconnect: drop"):
            self.client.drop()
        self.live.pop(execution_id, None)
        self.connect()
        result = self.call("attach", {"execution_id": execution_id, "since_seq": since})
        self.live[execution_id] = self.client
        replayed = [
            {"method": OUTPUT, "params": chunk}
            for chunk in result.get("output", result.get("chunks", [])) or []
            if isinstance(chunk, dict)
        ]
        with self.step("verify: nothing missing") as step:
            event, seen = self.wait_event(
                execution_id, {COMPLETED}, self.settings.cleanup_timeout_s + lines * 0.05
            )
            step.waited()  # the job ran to its end; the check is what follows
            if event is None:
                step.fail(f"no {COMPLETED} after attach")
            self.finished(execution_id)
            text = output_text(received) + output_text(replayed) + output_text(seen)
            numbers = [
                int(line.split()[1]) for line in text.splitlines() if line.startswith("line ")
            ]
            step.response_length = len(text)
            if numbers != list(range(1, lines + 1)):
                missing = sorted(set(range(1, lines + 1)) - set(numbers))
                extra = len(numbers) - len(set(numbers))
                step.fail(f"lines missing {missing[:10]} ({len(missing)}), duplicated {extra}")


class AgentUser(RpcUser):
    """Register a project, subscribe to it, run a ``fake-claude`` agent in it
    and check it ends with a result; delete the project when stopping."""

    wait_time = constant(1)
    REQUIRED = ("project.create", "project.subscribe", "agent.execute", "project.delete")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project_id: str | None = None
        self.project_dir: str | None = None

    @task
    def run_agent(self) -> None:
        missing = [m for m in self.REQUIRED if not self.has(m)]
        if missing:
            self.skip(f"the server does not announce {', '.join(missing)} (projects not there yet)")
        if not self.settings.project_root:
            self.skip("no --project-root given (a directory inside the server's project roots)")
        try:
            if self.project_id is None:
                self.create_project()
            self.agent_turn()
        except StepFailed:
            pass

    def create_project(self) -> None:
        name = f"stress-{uuid.uuid4().hex[:12]}"
        path = os.path.join(self.settings.project_root, name)
        os.makedirs(path, exist_ok=True)
        self.project_dir = path
        result = self.call("project.create", {"name": name, "path": path})
        project = result.get("project", result)
        project_id = project.get("project_id", project.get("id"))
        if not isinstance(project_id, str):
            raise StepFailed(f"project.create: no project id in {result}")
        self.project_id = project_id
        self.call("project.subscribe", {"project_id": project_id})

    def agent_turn(self) -> None:
        assert self.project_id is not None
        started = self.execute(
            {"project_id": self.project_id, "prompt": self.settings.agent_prompt}, "agent.execute"
        )
        execution_id = started["execution_id"]
        try:
            with self.step("verify: agent result") as step:
                event, seen = self.wait_event(execution_id, {COMPLETED}, 60)
                if event is None:
                    step.fail(f"no {COMPLETED} within 60 s")
                self.finished(execution_id)
                if event["params"].get("status") != "completed":
                    step.fail(f"agent ended {event['params'].get('status')!r}")
                results = [e for e in seen if e.get("method") == "agent.result"]
                while not results and not self.client.other_events.empty():
                    other = self.client.other_events.get_nowait()
                    if isinstance(other, dict) and other.get("method") == "agent.result":
                        results.append(other)
                if not results:
                    step.fail("no agent.result notification")
                if results[-1]["params"].get("is_error"):
                    step.fail(f"agent.result is_error: {results[-1]['params'].get('result')!r}")
        finally:
            if execution_id in self.live:
                self.cancel_quietly(self.client, execution_id)

    def on_stop(self) -> None:
        project_id = self.project_id
        if project_id is not None and self.client.connected:
            for execution_id, client in list(self.live.items()):
                self.cancel_quietly(client, execution_id)
            try:
                self.client.call("project.delete", {"project_id": project_id})
            except Exception as exc:  # cleanup must not hide the run's result
                self.report("project.delete", 0, 0, exc)
        if self.project_dir:
            shutil.rmtree(self.project_dir, ignore_errors=True)
        super().on_stop()
