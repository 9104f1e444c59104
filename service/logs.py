"""Logging setup, called once at the entry point.

JSON lines on stdout (python-json-logger) with timestamp, level, logger and
message, plus whatever context a call passes with ``extra=`` (connection,
request and execution ids). Uvicorn's own loggers are routed through the same
handler so that the whole output is one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ContextAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger with fixed context (``connection_id``, ``execution_id``) that
    keeps the ``extra=`` of each call as well: the standard adapter replaces
    it (before Python 3.13), which would drop fields such as ``exit_code``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    # One line per HTTP request is noise next to our own audit lines.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
