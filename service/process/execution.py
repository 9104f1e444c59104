"""One supervised child process and the tree of processes it starts.

An :class:`Execution` spawns its command in a new session (so its process
group id is its pid) inside its own :class:`~service.process.containment.Tree`
(a leaf cgroup, or its process group), reads stdout and stderr in two sibling
tasks, numbers output chunks with one ``seq`` across both streams, and hands
every encoded notification to its *sinks* (connections) without ever waiting
on them. It owns the controls: PAUSE (every member stopped, confirmed),
RESUME (SIGCONT) and the kill ladder (:mod:`service.process.ladder`), which
starts once and is safe to ask for from several places at once (control,
timeout, shutdown, leader exit).

``process.completed`` is sent once, last, after both pipes reached EOF (or
were closed after ``exit_drain_timeout_s`` because an escaped process held
them) and after every observer saw the final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shlex
import signal
import time
import uuid
from typing import Any, Protocol

from service import protocol
from service.errors import InvalidState, PauseTimeout
from service.logs import ContextAdapter
from service.process import procfs
from service.process.child import Child
from service.process.containment import Containment, Tree, TreeGone
from service.process.hold import Held
from service.process.ladder import terminate
from service.process.launcher import Launcher
from service.process.sinks import Chunk, Sinks
from service.process.spawn import EXECUTION_MARKER, ExecutionSpec, resolve_executable
from service.process.state import ExecutionState, check_transition
from service.process.stream import OutputStream, Pumps
from service.settings import Settings

logger = logging.getLogger(__name__)


class ExecutionObserver(Protocol):
    """Something that follows an execution without being a client (store, agent)."""

    def on_output(self, execution: Execution, chunk: Chunk) -> None: ...

    def on_transition(self, execution: Execution) -> None: ...


class Execution:
    def __init__(
        self,
        spec: ExecutionSpec,
        settings: Settings,
        containment: Containment,
        launcher: Launcher,
        execution_id: str | None = None,
    ) -> None:
        self.id = execution_id or uuid.uuid4().hex
        self.spec = spec
        self.settings = settings
        self._containment = containment
        self._launcher = launcher
        self.tree: Tree | None = None
        self.state = ExecutionState.STARTING
        self.pid: int | None = None
        self.pgid: int | None = None
        self.start_ticks: int | None = None
        self.seq = 0
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.error: str | None = None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.observers: list[ExecutionObserver] = []
        self.finished = asyncio.Event()
        #: Where its frames go (connections, attach holders), with their drops.
        self.sinks = Sinks()
        self._ending: ExecutionState | None = None
        self._started_mono = 0.0
        self._duration_s: float | None = None
        self._proc: Child | None = None
        self._ladder: asyncio.Task[None] | None = None
        self._timeout: asyncio.TimerHandle | None = None
        self._gate = asyncio.Event()
        self._gate.set()
        #: Cleared by an observer that cannot keep up (the store writer): the pipes are
        #: not read while it is clear, so the child blocks on its output, not the server.
        self.flow = asyncio.Event()
        self.flow.set()
        self._streams = {
            name: OutputStream(
                name,
                self._emit,
                max_line_bytes=spec.max_line_bytes or settings.max_line_bytes,
                flush_bytes=settings.flush_bytes,
                flush_interval_s=settings.flush_interval_s,
                read_chunk_bytes=settings.read_chunk_bytes,
                gate=self._gate,
                flow=self.flow,
            )
            for name in ("stdout", "stderr")
        }
        self.log = ContextAdapter(logger, {"execution_id": self.id})

    def broadcast(self, method: str, params: dict[str, Any], *, droppable: bool = False) -> None:
        """Send the notification ``method`` about this execution to every sink."""
        frame = protocol.frame(method, {"execution_id": self.id, **params})
        self.sinks.send(frame, droppable=droppable)

    # --- lifecycle -------------------------------------------------------------

    @property
    def stdout_bytes(self) -> int:
        return self._streams["stdout"].bytes_read

    @property
    def stderr_bytes(self) -> int:
        return self._streams["stderr"].bytes_read

    @property
    def duration_s(self) -> float:
        if self._duration_s is not None:
            return self._duration_s
        return time.monotonic() - self._started_mono if self._started_mono else 0.0

    def _transition(self, target: ExecutionState) -> None:
        check_transition(self.state, target)
        self.state = target
        for observer in self.observers:
            observer.on_transition(self)

    async def start(self, held: Held | None = None) -> None:
        """Spawn the child, held before its exec as ``held`` says (:mod:`~service.process.hold`;
        the admission's error is raised as is). OSError leaves it ``failed``."""
        spec = self.spec
        env = {**spec.env, EXECUTION_MARKER: self.id}
        tree: Tree | None = None
        try:
            executable = spec.executable or resolve_executable(
                spec.argv[0], os.pathsep.join(os.get_exec_path(env))
            )
            if executable is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), spec.argv[0])
            tree = self._containment.open(self.id)
            self._proc = await self._launcher.spawn(
                executable=executable,
                argv=spec.argv,
                cwd=spec.cwd,
                env=env,
                keep_stdin=spec.keep_stdin,
                procs_file=tree.procs_file,
                limit=self.settings.read_chunk_bytes,
                gate=held,
            )
        except OSError as exc:
            if tree is not None:
                tree.release()
            if held is not None:
                await held.admitted  # failed before the spawn: recorded first (or refused)
            self.refuse(f"cannot execute {shlex.quote(spec.argv[0])}: {exc.strerror or exc}")
            raise
        except BaseException:
            if tree is not None:
                tree.release()  # kills whatever a cancelled spawn left in it
            raise
        self.pid = self.pgid = self._proc.pid
        tree.attach(self.pid)
        self.tree = tree
        self.start_ticks = procfs.start_ticks(self.pid)
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._transition(ExecutionState.RUNNING)
        if spec.timeout_s is not None:
            loop = asyncio.get_running_loop()
            self._timeout = loop.call_later(spec.timeout_s, self._on_timeout)

    def refuse(self, error: str) -> None:
        """It will not be spawned (or could not be): ``failed`` with ``error``."""
        self.error, self.ended_at, self._duration_s = error, time.time(), 0.0
        self._transition(ExecutionState.FAILED)
        self.finished.set()

    async def supervise(self) -> None:
        """The execution's life after :meth:`start`: stream, wait, finish.
        Cancelling it (shutdown past its deadline) SIGKILLs the group and re-raises."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        self.sinks.send(protocol.process_started(self.id, self.pid, self.pgid), droppable=False)
        pumps = Pumps(self._streams, proc.stdout, proc.stderr, self.id, self.log)
        try:
            returncode = await proc.wait()
            # The leader's status is final: a timeout can no longer relabel it, and
            # readers held by a pause must drain the pipes now. (A congested store
            # keeps holding them: its flow control bounds memory, and the drain
            # waits for it rather than close pipes that still hold output.)
            if self._timeout is not None:
                self._timeout.cancel()
                self._timeout = None
            self._gate.set()
            if self.tree is not None and self.tree.alive():
                # The leader is gone; nothing of its group may outlive it.
                await self._ensure_ladder()
            if not await pumps.drained(self.settings.exit_drain_timeout_s, self.flow):
                self.log.warning(
                    "output pipes still open after exit; closing them",
                    extra={"pid": self.pid},
                )
            await pumps.stop()
            self._finish(returncode)
        except asyncio.CancelledError:
            self._kill_now()
            await pumps.stop()
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 1.0)
            if proc.returncode is not None and not self.state.is_final:
                self._ending = self._ending or ExecutionState.CANCELLED
                self._finish(proc.returncode)
            raise
        finally:
            if self._timeout is not None:
                self._timeout.cancel()
            if self._ladder is not None and not self._ladder.done():
                self._ladder.cancel()
                # wait(), not await: a cancellation aimed at supervise itself must
                # not be swallowed along with the ladder's.
                await asyncio.wait([self._ladder])
            proc.close()
            if self.tree is not None:
                self.tree.release()
            self.finished.set()

    def _finish(self, returncode: int) -> None:
        self.exit_code = returncode if returncode >= 0 else None
        self.signal = -returncode if returncode < 0 else None
        self.ended_at = time.time()
        self._duration_s = time.monotonic() - self._started_mono
        if self._ending is not None:
            final = self._ending
        else:
            final = ExecutionState.COMPLETED if returncode == 0 else ExecutionState.FAILED
        self._transition(final)
        self.log.info(
            "execution ended",
            extra={
                "state": final.value,
                "exit_code": self.exit_code,
                "signal": self.signal,
                "duration_s": round(self._duration_s, 3),
                "stdout_bytes": self.stdout_bytes,
                "stderr_bytes": self.stderr_bytes,
            },
        )
        for sink, dropped in self.sinks.each():
            frame = protocol.process_completed(
                self.id,
                final.value,
                exit_code=self.exit_code,
                signal=self.signal,
                duration_s=round(self._duration_s, 6),
                stdout_bytes=self.stdout_bytes,
                stderr_bytes=self.stderr_bytes,
                dropped=dropped,
            )
            sink.offer(frame, droppable=False)

    # --- output ----------------------------------------------------------------

    def _emit(self, stream: str, data: bytes, truncated: bool) -> None:
        self.seq += 1
        text = data.decode("utf-8", "replace")
        frame = protocol.process_output(self.id, stream, text, self.seq, truncated)
        self.sinks.send(frame, droppable=True)
        if self.observers:
            chunk = Chunk(self.seq, stream, text, len(data), truncated, time.time())
            for observer in self.observers:
                observer.on_output(self, chunk)

    # --- control ---------------------------------------------------------------

    async def pause(self) -> None:
        """Stop every process of the tree; return once each one is stopped."""
        if self.state is not ExecutionState.RUNNING or self._ending is not None:
            raise InvalidState(f"cannot pause: execution is {self._state_word()}")
        assert self.tree is not None
        self._gate.clear()
        try:
            await self.tree.stop(self.settings.pause_confirm_timeout_s)
        except TreeGone:
            self._gate.set()
            raise InvalidState("cannot pause: the process group has exited") from None
        except TimeoutError:
            self._gate.set()
            raise PauseTimeout("the process group did not stop in time") from None
        except BaseException:
            # Abandoned halfway (its connection died): the tree continued the
            # members; the readers must flow again too.
            self._gate.set()
            raise
        if self._ending is not None or self.state.is_final:
            self._gate.set()
            raise InvalidState(f"cannot pause: execution is {self._state_word()}")
        self._transition(ExecutionState.PAUSED)
        self.log.info("paused", extra={"pgid": self.pgid})
        self.sinks.send(protocol.process_paused(self.id), droppable=False)

    async def resume(self) -> None:
        if self.state is not ExecutionState.PAUSED or self._ending is not None:
            raise InvalidState(f"cannot resume: execution is {self._state_word()}")
        if self.tree is not None:
            self.tree.signal(signal.SIGCONT)
        self._transition(ExecutionState.RUNNING)
        self.log.info("resumed", extra={"pgid": self.pgid})
        self.sinks.send(protocol.process_resumed(self.id), droppable=False)
        self._gate.set()
        for stream in self._streams.values():
            stream.flush()

    async def cancel(self, reason: str = "cancelled by client") -> None:
        """Start the kill ladder and mark the execution cancelled."""
        if self.state.is_final or self.state is ExecutionState.STARTING:
            raise InvalidState(f"cannot cancel: execution is {self._state_word()}")
        if self._ending is not None:
            raise InvalidState(f"cannot cancel: execution is already {self._ending.value}")
        self._ending = ExecutionState.CANCELLED
        self.log.info("cancelling", extra={"reason": reason, "pgid": self.pgid})
        self.sinks.send(protocol.process_cancelled(self.id), droppable=False)
        self._ensure_ladder()

    def _on_timeout(self) -> None:
        self._timeout = None
        if self._ending is None and not self.state.is_final:
            self._ending = ExecutionState.TIMED_OUT
            self.log.info("timed out", extra={"timeout_s": self.spec.timeout_s})
            self._ensure_ladder()

    def _state_word(self) -> str:
        if self._ending is not None and not self.state.is_final:
            return f"being {self._ending.value}"
        return self.state.value

    def _ensure_ladder(self) -> asyncio.Task[None]:
        """Start the kill ladder once; every caller gets the same task."""
        if self._ladder is None:
            self._ladder = asyncio.create_task(self._run_ladder(), name=f"{self.id}:ladder")
        return self._ladder

    async def _run_ladder(self) -> None:
        # Readers must not sit behind a paused gate while the tree dies.
        self._gate.set()
        if self.tree is not None:
            await terminate(self.tree, self.settings.kill_grace_s, self.log)

    def _kill_now(self) -> None:
        if self.tree is not None:
            self.tree.kill()

    def write_input(self, data: str, eof: bool) -> int:
        """Write to the child's stdin without waiting; the bytes written."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise InvalidState("stdin is not open: start the execution with stdin: true")
        if self.state.is_final:
            raise InvalidState("stdin is closed")
        return proc.write_input(data.encode(), eof)

    def snapshot(self) -> dict[str, Any]:
        """The execution's state as ``status`` reports it."""
        return {
            "execution_id": self.id,
            "state": self.state.value,
            "command": self.spec.display,
            "argv": self.spec.argv,
            "cwd": self.spec.cwd,
            "pid": self.pid,
            "pgid": self.pgid,
            "project_id": self.spec.project_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 6),
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes,
            "last_seq": self.seq,
            "timeout": self.spec.timeout_s,
            "stdin": self.spec.keep_stdin,
            "error": self.error,
        }
