"""Logging setup, called once at the entry point.

JSON lines on stdout (python-json-logger) with timestamp, level, logger and
message, plus whatever context a call passes with ``extra=`` (connection,
request and execution ids). Uvicorn's own loggers are routed through the same
handler so that the whole output is one format.

No secret and no ``env`` value reaches the log at any level: at DEBUG the
websockets protocol traces every frame with its payload (a request's ``env``,
a token in a message) and every handshake header (``Authorization``,
``Cookie``) and request path (``?token=``); :class:`SecretRedactor` keeps the
shape of those lines (direction, frame type, size, header name) and drops
the contents.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from websockets.frames import Frame

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ContextAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger with fixed context (``connection_id``, ``execution_id``) that
    keeps the ``extra=`` of each call as well: the standard adapter replaces
    it (before Python 3.13), which would drop fields such as ``exit_code``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


#: Handshake headers whose values are credentials.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class SecretRedactor(logging.Filter):
    """Drops payloads and credentials from the websockets protocol's DEBUG traces."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg, args = record.msg, record.args
        if not isinstance(args, tuple) or not args:
            return True
        if msg in ("< %s", "> %s") and isinstance(args[0], Frame):
            frame = args[0]
            record.msg = f"{msg[0]} {frame.opcode.name} [{len(frame.data)} bytes]"
            record.args = None
        elif msg in ("< %s: %s", "> %s: %s") and str(args[0]).lower() in SECRET_HEADERS:
            record.args = (args[0], "[redacted]")
        elif msg == "< %s %s %s" and len(args) == 3:
            # The request path's query may carry ?token=.
            record.args = (args[0], str(args[1]).split("?", 1)[0], args[2])
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(SecretRedactor())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(UvicornRecords())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    # One line per HTTP request is noise next to our own audit lines.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


class UvicornRecords(logging.Filter):
    """Uvicorn's records made plain: no ``color_message`` (ANSI escapes in a
    JSON field), and a logger name that says what the line is about. Uvicorn
    logs everything, start-up included, as ``uvicorn.error``; here the lines
    of its WebSocket protocol (and of the websockets library under it) are
    ``uvicorn.websocket`` and the rest ``uvicorn.server`` (the level still
    says whether it is an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        if record.name == "uvicorn.error":
            # uvicorn/protocols/websockets/ and the websockets package itself.
            websocket = "/websockets/" in record.pathname or '"WebSocket ' in str(record.msg)
            record.name = "uvicorn.websocket" if websocket else "uvicorn.server"
        return True
