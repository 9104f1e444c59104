"""The bus: one ``LISTEN`` connection per node (PostgreSQL ``LISTEN/NOTIFY``).

:class:`Bus` listens on a fixed set of channels (``cc_output`` and
``cc_state``, which the store's recorder notifies, and this node's own
channel of requests and replies) and hands every notification to one
callback, on the event loop, in the order PostgreSQL delivered them.
Notifications carry only small payloads (ids and seqs, or a small JSON
request); the data stays in rows.

The connection is psycopg's ``AsyncConnection`` in autocommit mode, read with
``notifies()`` inside one task (which the owner keeps and cancels). When it
breaks, the loop logs it, counts it (:attr:`Bus.losses`), tells
``on_reconnect`` (what was notified meanwhile is lost: followers re-read
their rows) and reconnects with a capped exponential back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: Back-off between reconnection attempts: from the first to the cap, doubling.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


class Bus:
    """``LISTEN`` on ``channels`` of the database at ``dsn``; see the module."""

    def __init__(
        self,
        dsn: str,
        channels: list[str],
        on_notify: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
        connect_timeout_s: float,
    ) -> None:
        self.dsn = dsn
        self.channels = channels
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.connect_timeout_s = connect_timeout_s
        #: Set while the ``LISTEN`` connection is up.
        self.connected = asyncio.Event()
        #: How often the connection was lost, and the last reason.
        self.losses = 0
        self.last_error: str | None = None
        self.received = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting whenever the connection breaks."""
        import psycopg

        backoff = BACKOFF_FIRST_S
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=max(1, round(self.connect_timeout_s)),
                )
            except psycopg.Error as exc:
                self._lost(exc, connected=False)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            try:
                await self._listen(conn)
                self.connected.set()
                if not first:
                    logger.info("bus reconnected", extra={"losses": self.losses})
                    self.on_reconnect()
                first = False
                backoff = BACKOFF_FIRST_S
                async for note in conn.notifies():
                    self.received += 1
                    self.on_notify(note.channel, note.payload)
            except psycopg.Error as exc:
                self._lost(exc, connected=True)
            finally:
                self.connected.clear()
                await _close(conn)
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _listen(self, conn: Any) -> None:
        from psycopg import sql

        for channel in self.channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _lost(self, exc: BaseException, *, connected: bool) -> None:
        self.losses += 1 if connected else 0
        self.last_error = str(exc).strip()[:200]
        logger.warning(
            "bus connection lost; reconnecting" if connected else "bus cannot connect; retrying",
            extra={"error": self.last_error, "losses": self.losses},
        )

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.connected.is_set(),
            "losses": self.losses,
            "received": self.received,
            "last_error": self.last_error,
        }


async def _close(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # a broken connection may fail to close; it is gone either way
        logger.debug("bus connection close failed", exc_info=True)
