"""cc-executor: supervised child processes driven live over JSON-RPC 2.0 on a WebSocket."""

__version__ = "0.1.0"
