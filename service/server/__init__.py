"""The server: uvicorn and the Starlette app, the WebSocket connection and its
dispatcher, the JSON-RPC methods and the MCP endpoint.

:func:`service.server.serve.serve` runs it; :func:`service.server.root.compose`
builds the parts it serves. Nothing here is imported by the parts below it
(process, store, projects): see ``docs/architecture.md``.
"""
