"""Probe a running cc-executor container from outside: /healthz open, /health
and the WebSocket closed without the token, and one ``execute`` streamed to
its ``process.completed`` with the token.

Standalone on purpose (standard library plus ``websockets``), so that it runs
in the image itself: ``docker run -i --network host --entrypoint python IMAGE - URL TOKEN``.
Exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request

import websockets


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def check(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        sys.exit(1)


async def websocket_checks(ws_url: str, token: str, env: dict[str, str], allow_root: bool) -> None:
    try:
        async with websockets.connect(ws_url, open_timeout=5):
            refused = False
    except websockets.exceptions.InvalidStatus as exc:
        refused = exc.response.status_code == 401
    check(refused, "WebSocket handshake without token refused with 401")

    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(ws_url, additional_headers=headers, open_timeout=5) as ws:
        connected = json.loads(await asyncio.wait_for(ws.recv(), 5))
        check(connected.get("method") == "connected", f"connected: {connected['params']}")
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "execute",
            "params": {"argv": ["sh", "-c", "echo hello from docker; id -u"], "env": env},
        }
        await ws.send(json.dumps(request))
        output = ""
        completed = None
        while completed is None:
            message = json.loads(await asyncio.wait_for(ws.recv(), 15))
            print("     <-", json.dumps(message), flush=True)
            if message.get("id") == 1:
                check("result" in message, "execute answered with a result")
            elif message.get("method") == "process.output":
                output += message["params"]["data"]
            elif message.get("method") == "process.completed":
                completed = message["params"]
        check(completed["status"] == "completed", "process.completed with status completed")
        lines = output.splitlines()
        check(lines[:1] == ["hello from docker"], "the output arrived")
        if not allow_root:
            check(lines[1:2] != ["0"], f"the child runs as a non-root user (uid {lines[1:2]})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="http://HOST:PORT of the server")
    parser.add_argument("token", help="the server's token")
    parser.add_argument("--allow-root", action="store_true", help="skip the non-root check")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    base, token = args.base, args.token
    env = dict(item.split("=", 1) for item in args.env)
    check(http_status(f"{base}/healthz") == 200, "GET /healthz without token: 200")
    check(http_status(f"{base}/health") == 401, "GET /health without token: 401")
    check(http_status(f"{base}/health", token) == 200, "GET /health with token: 200")
    ws_url = base.replace("http", "ws", 1) + "/ws/mcp"
    asyncio.run(websocket_checks(ws_url, token, env, args.allow_root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
