"""The client side: the asyncio client (:mod:`service.client.api`), the
``cc-executor`` client commands (:mod:`service.client.commands`) and the
launcher that starts a server of one's own (:mod:`service.client.launch`).
It speaks the wire only and imports nothing of the server.

The client's names are handed on here: ``from service.client import
ExecutorClient`` (and ``error_from_wire``, which turns an error object of the
wire into its typed exception, from :mod:`service.protocol`).
"""

from service.client.api import (
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    ConnectionLost,
    ExecutionError,
    ExecutionResult,
    ExecutorClient,
    RemoteExecution,
    resolve_url,
)
from service.protocol import error_from_wire

__all__ = [
    "DEFAULT_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "ConnectionLost",
    "ExecutionError",
    "ExecutionResult",
    "ExecutorClient",
    "RemoteExecution",
    "error_from_wire",
    "resolve_url",
]
