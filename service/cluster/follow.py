"""Following an execution that runs on another node, from the shared store.

A client attached here to an execution of node A gets, as on one node, the
stored chunks after its ``since_seq``, then the live output, then
``process.completed``. Here the live output is also read from the store:
every committed batch of A's recorder notifies ``cc_output``
(``"<execution_id>:<seq>"``) and each transition ``cc_state``; a notification
wakes the follower, which reads the chunks after the last seq it sent. The
store orders the seqs, so there is no gap and no duplicate whatever the
timing of the notifications (a lost one only delays the next read: the
follower also reads every :data:`POLL_S` and after the bus reconnects).

The state is read *before* the chunks: the recorder stores an execution's
final state only after its last chunk, so a final state read first means the
chunk read that follows holds everything; ``process.completed`` comes last,
built from the row (:func:`~service.store.attach.completed_frame`). PAUSE and
RESUME on A show here as ``process.paused`` / ``process.resumed``, from
``cc_state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from typing import Any

from service.protocol import process_cancelled, process_paused, process_resumed
from service.store import Store
from service.store.attach import Subscriber, completed_frame
from service.store.history import chunk_rows, get_execution, output_frame

logger = logging.getLogger(__name__)

#: Chunks read per query.
PAGE = 2000
#: A follower reads the store at least this often (a missed notification).
POLL_S = 1.0
#: How long a follower waits for the row of an execution just started elsewhere.
MISSING_S = 10.0
FINAL_STATES = ("completed", "failed", "cancelled", "timed_out", "lost")


class Followers:
    """The followers of remote executions on this node, woken by the bus."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._wake: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._states: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)

    def following(self, execution_id: str) -> bool:
        return execution_id in self._wake

    def on_output(self, execution_id: str) -> None:
        for event in self._wake.get(execution_id, ()):
            event.set()

    def on_state(self, execution_id: str, state: str) -> None:
        for queue in self._states.get(execution_id, ()):
            queue.put_nowait(state)
        self.on_output(execution_id)

    def wake_all(self) -> None:
        """After the bus reconnected: anything may have been missed."""
        for events in self._wake.values():
            for event in events:
                event.set()

    async def follow(self, connection: Subscriber, record: dict[str, Any], since_seq: int) -> int:
        """Send ``connection`` everything of the execution after ``since_seq``
        until it ends; the last seq sent. OutboxClosed when the client goes."""
        execution_id = record["execution_id"]
        wake, states = asyncio.Event(), asyncio.Queue[str]()
        self._wake[execution_id].add(wake)
        self._states[execution_id].add(states)
        sent, state, missing = since_seq, record["state"], 0
        try:
            while True:
                wake.clear()
                while not states.empty():
                    state = await self._state_frame(connection, execution_id, state, states)
                current = await self.store.read(lambda conn: get_execution(conn, execution_id))
                if current is None:
                    # Started on another node a moment ago: its row is not committed yet.
                    missing += 1
                    if missing * POLL_S > MISSING_S:
                        raise LookupError(f"execution {execution_id} is not in the store")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), POLL_S)
                    continue
                sent = await self._send_after(connection, execution_id, sent)
                if current["state"] in FINAL_STATES:
                    if current["state"] == "cancelled" and state != "cancelled":
                        await connection.put(process_cancelled(execution_id))
                    await connection.put(completed_frame(execution_id, current))
                    return sent
                if not states.empty():
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), POLL_S)
                except TimeoutError:
                    pass
        finally:
            self._forget(execution_id, wake, states)

    async def _state_frame(
        self, connection: Subscriber, execution_id: str, before: str, states: asyncio.Queue[str]
    ) -> str:
        state = states.get_nowait()
        if state == "paused" and before != "paused":
            await connection.put(process_paused(execution_id))
        elif state == "running" and before == "paused":
            await connection.put(process_resumed(execution_id))
        elif state == "cancelled" and before != "cancelled":
            # The row turns `cancelled` only once the group is gone; the
            # process.completed that follows is read from it.
            await connection.put(process_cancelled(execution_id))
        return state

    async def _send_after(self, connection: Subscriber, execution_id: str, after: int) -> int:
        while True:
            read = functools.partial(
                chunk_rows, execution_id=execution_id, after_seq=after, upto_seq=None, limit=PAGE
            )
            rows = await self.store.read(read)
            for row in rows:
                await connection.put(output_frame(execution_id, row))
                after = row[0]
            if len(rows) < PAGE:
                return after

    def _forget(self, execution_id: str, wake: asyncio.Event, states: asyncio.Queue[str]) -> None:
        self._wake[execution_id].discard(wake)
        self._states[execution_id].discard(states)
        if not self._wake[execution_id]:
            del self._wake[execution_id]
        if not self._states[execution_id]:
            del self._states[execution_id]
