"""``attach``: replay an execution's transcript, then continue live, seamlessly.

The seam is the execution's ``seq`` at the instant of the attach. In one
synchronous step (no ``await``, so no chunk can slip between) the attaching
connection becomes an owner (the detach timer stops) and, instead of the
connection itself, a :class:`Holder` becomes the execution's sink: from then
on the live frames for this connection are held, all of them with seq beyond
the seam. The replay task then makes sure the store has everything up to the
seam (:meth:`Recorder.sync`), sends the stored chunks ``since_seq < seq <=
seam`` with :meth:`Outbox.put` (which waits for room: a slow reader slows only
its own replay), then sends the held frames the same way. When nothing is
held any more, again in one synchronous step, the holder is removed and the
connection becomes the sink: live frames flow directly. No gap, no duplicate.

The holder is bounded (``max_pending_bytes``). A producer faster than the
reader makes it overflow; it then stops holding output (it is all in the
store) and the replay catches up from the store up to a new seam, as often
as needed. Chunks past the transcript cap are not stored, so they cannot be
replayed: they show as a gap in seq.

Attaching to a finished execution replays its transcript and then sends its
``process.completed`` (``dropped`` 0: this connection received all the store
has). An execution known only to the store (an earlier server's, now
``lost`` or finished) replays the same way.

While the store's database is unreachable (PostgreSQL down), attaching to a
live execution joins its live stream at once without a replay
(``replay: false``), as without a store.

Every replay ends with a terminal notification for the client: the live
stream (which ends with ``process.completed``), ``process.completed``, or
``process.error`` with the reason (``error_name`` ``STORE_ERROR`` when the
store could not give the transcript). A client is never left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from service.errors import InvalidState, NotFound
from service.outbox import OutboxClosed
from service.process.execution import Execution
from service.protocol import Frame, attached, process_completed, process_error
from service.store.database import Store, StoreError
from service.store.history import chunk_rows, get_execution, output_frame
from service.store.recorder import Recorder

if TYPE_CHECKING:
    from service.process.supervisor import Supervisor

logger = logging.getLogger(__name__)

#: Chunks read from the store per query while replaying.
REPLAY_PAGE = 2000


class Subscriber(Protocol):
    """Who attaches (a :class:`~service.dispatch.Peer`): a sink with an id
    that replayed frames can also be put into, waiting for room."""

    id: str

    def __hash__(self) -> int: ...

    def offer(self, frame: Frame, *, droppable: bool) -> bool: ...

    async def put(self, frame: Frame) -> None:
        """Queue ``frame``, waiting while the queue is full; OutboxClosed once
        the peer is gone."""

    @property
    def closed(self) -> bool: ...


class Holder:
    """A Sink that holds one connection's live frames of one execution during
    its replay. ``offer`` never refuses an output chunk: past the budget it
    stops holding output and sets :attr:`overflowed`; the replay then fetches
    those chunks from the store."""

    def __init__(self, execution: Execution, budget_bytes: int) -> None:
        self.execution = execution
        self.budget_bytes = budget_bytes
        #: ``(seq, frame)`` for output chunks, ``(None, frame)`` for the rest.
        self.entries: deque[tuple[int | None, Frame]] = deque()
        self.bytes = 0
        self.overflowed = False

    def offer(self, frame: Frame, *, droppable: bool) -> bool:
        seq = frame.seq
        is_output = seq is not None
        if is_output and (self.overflowed or self.bytes + len(frame) > self.budget_bytes):
            self.overflowed = True
            return True  # in the store: the replay catches up
        if droppable and not is_output and self.bytes + len(frame) > self.budget_bytes:
            return False
        self.entries.append((seq, frame))
        self.bytes += len(frame)
        return True

    def pop(self) -> tuple[int | None, Frame]:
        seq, frame = self.entries.popleft()
        self.bytes -= len(frame)
        return seq, frame

    def forget_output(self) -> None:
        """Drop the held output chunks (they will be replayed from the store)."""
        kept = deque(entry for entry in self.entries if entry[0] is None)
        self.bytes = sum(len(frame) for _, frame in kept)
        self.entries = kept
        self.overflowed = False


def completed_frame(execution_id: str, record: dict[str, Any]) -> Frame:
    """A ``process.completed`` for a connection that attached to a finished execution."""
    lost = record["state"] == "lost" and record.get("reason")
    return process_completed(
        execution_id,
        record["state"],
        exit_code=record.get("exit_code"),
        signal=record.get("signal"),
        duration_s=record.get("duration_s"),
        stdout_bytes=record.get("stdout_bytes", 0),
        stderr_bytes=record.get("stderr_bytes", 0),
        dropped=0,
        reason=record["reason"] if lost else None,
    )


def send_error(connection: Subscriber, execution_id: str, reason: str, name: str) -> None:
    """End an attach with ``process.error``: the client stops waiting."""
    connection.offer(process_error(execution_id, reason, name), droppable=False)


class Attacher:
    """Runs the replays of ``attach``; one per connection and execution at a time."""

    def __init__(
        self, store: Store | None, recorder: Recorder | None, supervisor: Supervisor
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.supervisor = supervisor
        self._active: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def attach(
        self, connection: Subscriber, execution_id: str, since_seq: int
    ) -> dict[str, Any]:
        """Start replaying to ``connection``; the ``attach`` result. The replay
        frames follow the result."""
        key = (connection.id, execution_id)
        if key in self._active:
            raise InvalidState(
                "this connection is already attaching to this execution; wait for its replay"
            )
        supervisor = self.supervisor
        execution = supervisor.live.get(execution_id) or supervisor.finished.get(execution_id)
        if execution is None:
            return await self._attach_stored(connection, key, execution_id, since_seq)
        # From here to the end of this block: no await, so no frame slips by.
        finished = execution.state.is_final
        seam = execution.seq
        supervisor.add_owner(execution, connection)
        snapshot = execution.snapshot()
        result = attached(
            execution.id,
            execution.state.value,
            execution.pid,
            execution.pgid,
            since_seq,
            seam,
            replay=self.recorder is not None and self._reachable(),
        )
        if not result["replay"]:
            # No store, or its database unreachable: nothing to replay, but the
            # live stream joins at once; the client sees the gap in seq.
            if finished:
                connection.offer(completed_frame(execution.id, snapshot), droppable=False)
            return result
        execution.sinks.remove(connection)
        holder = Holder(execution, self.supervisor.settings.max_pending_bytes)
        execution.sinks.add(holder)
        self._start(
            key,
            self._replay_live(connection, execution, holder, since_seq, seam, finished),
            connection,
        )
        logger.info(
            "attached",
            extra={
                "execution_id": execution.id,
                "connection_id": connection.id,
                "since_seq": since_seq,
                "seam": seam,
            },
        )
        return result

    def _reachable(self) -> bool:
        return self.store is not None and self.store.available

    async def _attach_stored(
        self, connection: Subscriber, key: tuple[str, str], execution_id: str, since_seq: int
    ) -> dict[str, Any]:
        if self.store is None:
            raise NotFound(f"execution not found: {execution_id}", {"execution_id": execution_id})
        record = await self.store.read(lambda conn: get_execution(conn, execution_id))
        if record is None:
            raise NotFound(f"execution not found: {execution_id}", {"execution_id": execution_id})
        if key in self._active:
            raise InvalidState("this connection is already attaching to this execution")
        self._start(key, self._replay_stored(connection, record, since_seq), connection)
        return attached(
            execution_id,
            record["state"],
            record["pid"],
            record["pgid"],
            since_seq,
            record["last_seq"],
            replay=True,
        )

    def _start(self, key: tuple[str, str], coro: Awaitable[None], connection: Subscriber) -> None:
        execution_id = key[1]

        async def run() -> None:
            try:
                await coro
            except OutboxClosed:
                pass  # the client went away; nothing to send to
            except StoreError as exc:
                logger.warning(
                    "replay failed: store error: %s",
                    exc,
                    extra={"execution_id": execution_id, "connection_id": connection.id},
                )
                send_error(connection, execution_id, f"store error: {exc}", "STORE_ERROR")
            except Exception:
                logger.exception(
                    "replay failed",
                    extra={"execution_id": execution_id, "connection_id": connection.id},
                )
                send_error(connection, execution_id, "internal error during replay", "INTERNAL")
            finally:
                self._active.pop(key, None)

        self._active[key] = self.supervisor.spawn_task(run(), name=f"attach:{key[1]}")

    async def _send_range(
        self, connection: Subscriber, execution_id: str, after_seq: int, upto_seq: int | None
    ) -> None:
        """Send the stored chunks ``after_seq < seq <= upto_seq``, reading the
        next page while the current one is being sent."""
        store = self.store
        assert store is not None

        def page(after: int) -> asyncio.Task[list[tuple[int, str, str, int, float]]]:
            return asyncio.create_task(
                store.read(
                    lambda conn: chunk_rows(conn, execution_id, after, upto_seq, REPLAY_PAGE)
                )
            )

        pending = page(after_seq)
        try:
            while True:
                rows = await pending
                if len(rows) == REPLAY_PAGE:
                    pending = page(rows[-1][0])
                for row in rows:
                    await connection.put(output_frame(execution_id, row))
                if len(rows) < REPLAY_PAGE:
                    return
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending

    async def _replay_live(
        self,
        connection: Subscriber,
        execution: Execution,
        holder: Holder,
        since_seq: int,
        seam: int,
        finished: bool,
    ) -> None:
        recorder = self.recorder
        assert recorder is not None
        sent = since_seq
        rounds = 0
        try:
            while True:
                rounds += 1
                if seam > sent:
                    await recorder.sync()
                    await self._send_range(connection, execution.id, sent, seam)
                    sent = seam
                while holder.entries and not holder.overflowed:
                    seq, frame = holder.pop()
                    if seq is not None and seq <= since_seq:
                        continue  # the client asked for what follows since_seq only
                    await connection.put(frame)
                    if seq is not None:
                        sent = seq
                if holder.overflowed:
                    # Output was not held: catch up from the store to a new seam.
                    seam = execution.seq
                    holder.forget_output()
                    continue
                # The seam: nothing held, no await until the connection is the sink.
                execution.sinks.remove(holder)
                if not connection.closed:
                    execution.sinks.add(connection)
                break
            if finished:
                await connection.put(completed_frame(execution.id, execution.snapshot()))
            logger.info(
                "replay done",
                extra={
                    "execution_id": execution.id,
                    "connection_id": connection.id,
                    "last_seq": sent,
                    "rounds": rounds,
                },
            )
        finally:
            execution.sinks.remove(holder)

    async def _replay_stored(
        self, connection: Subscriber, record: dict[str, Any], since_seq: int
    ) -> None:
        execution_id = record["execution_id"]
        await self._send_range(connection, execution_id, since_seq, None)
        if record["state"] in ("starting", "running", "paused"):
            # Live in the store but not in this server (recovery marks such
            # rows lost at start): there is no live stream to join.
            send_error(
                connection,
                execution_id,
                f"the execution is {record['state']} in the store but not running "
                "in this server; no further output will come",
                "NOT_LIVE",
            )
            return
        await connection.put(completed_frame(execution_id, record))
