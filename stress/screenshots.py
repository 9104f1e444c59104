"""Screenshots of the Locust web UI for docs/stress.md, taken as a user sees it.

    .venv/bin/python -m stress.screenshots [--out docs/images] [--seconds 40]

Starts ``ci/stress --ui`` (a real server and Locust's web UI on a free
loopback port), opens the UI in headless Chromium (Debian's ``chromium``,
driven over the DevTools protocol with the ``websockets`` package the project
already has), and saves:

- ``stress-ui-start.png``: the start form with its defaults, the
  "Custom parameters" panel opened;
- ``stress-ui-statistics.png``: the statistics of a run started with that
  form's defaults (the Start button is clicked), stopped after ``--seconds``.

``--cluster`` does the same with ``ci/stress --ui --cluster`` (two nodes
sharing a throwaway PostgreSQL, ClusterUser among the users) and saves
``stress-ui-cluster-start.png`` and ``stress-ui-cluster-statistics.png``.

Not part of ``make test``: it needs Chromium and takes about a minute. The
browser runs with a fresh profile and without any background networking.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s:g} s") from None
            time.sleep(0.3)


class Page:
    """One Chromium tab over the DevTools protocol (flat sessions)."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, ws: Any) -> Page:
        browser = cls(ws, "")
        target = await browser.send("Target.createTarget", {"url": "about:blank"})
        attached = await browser.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        return cls(ws, attached["sessionId"])

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message_id = next(self.ids) + (0 if not self.session_id else 1_000_000)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if self.session_id:
            message["sessionId"] = self.session_id
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.evaluate(expression):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for: {expression}")
            await asyncio.sleep(0.3)

    async def screenshot(self, path: Path) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        await asyncio.sleep(0.5)
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": int(height or 900), "deviceScaleFactor": 1, "mobile": False},
        )
        await asyncio.sleep(0.5)
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        print(f"screenshots: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def click_text(tag: str, text: str) -> str:
    """JS that clicks the first ``tag`` whose text is ``text``; true if found."""
    return (
        f"(() => {{ const el = [...document.querySelectorAll({json.dumps(tag)})]"
        f".find(e => e.textContent.trim() === {json.dumps(text)});"
        " if (el) { el.click(); return true; } return false; })()"
    )


async def capture(
    browser_url: str, web_url: str, out: Path, seconds: float, prefix: str = "stress-ui"
) -> None:
    async with websockets.connect(browser_url, max_size=64 * 1024 * 1024) as ws:
        page = await Page.open(ws)
        await page.send("Page.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        await page.send("Page.navigate", {"url": web_url})
        await page.wait_for("document.body && document.body.innerText.includes('Start')")
        if not await page.evaluate(click_text("p", "Custom parameters")):
            raise RuntimeError("no 'Custom parameters' panel in the start form")
        await page.wait_for("document.body.innerText.includes('Job Seconds')")
        await asyncio.sleep(1)
        await page.screenshot(out / f"{prefix}-start.png")

        # A run with the form's defaults, started the way a user starts it.
        if not await page.evaluate(click_text("button", "Start")):
            raise RuntimeError("no Start button")
        await page.wait_for("document.body.innerText.includes('RUNNING')", 30)
        await asyncio.sleep(seconds)
        if not await page.evaluate(click_text("button", "Stop")):
            raise RuntimeError("no Stop button")
        await page.wait_for("document.body.innerText.includes('STOPPED')", 60)
        await page.evaluate(click_text("button", "Statistics"))
        await asyncio.sleep(2)
        await page.screenshot(out / f"{prefix}-statistics.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stress.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the run")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="ci/stress --ui --cluster (two nodes, ClusterUser); stress-ui-cluster-*.png",
    )
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshots: needs Chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    web_url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="ccx-shots-") as tmp:
        env = {**os.environ, "STRESS_REPORTS": str(Path(tmp) / "reports")}
        log_path = Path(tmp) / "launcher.log"
        with log_path.open("wb") as log:
            launcher = subprocess.Popen(
                [
                    *(sys.executable, "-m", "stress.launch", "--ui"),
                    *(["--cluster"] if args.cluster else []),
                    *("--", "--web-port", str(port)),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        browser = None
        try:
            wait_http(web_url, 60)
            browser = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", "about:blank"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert browser.stderr is not None
            browser_url = None
            for line in browser.stderr:
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                if found:
                    browser_url = found.group(1)
                    break
            if browser_url is None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            # Keep draining Chromium's chatter so that it never blocks on a full pipe.
            drain = threading.Thread(target=browser.stderr.read, daemon=True)
            drain.start()
            prefix = "stress-ui-cluster" if args.cluster else "stress-ui"
            shots = capture(browser_url, web_url, args.out, args.seconds, prefix)
            asyncio.run(asyncio.wait_for(shots, 300))
        finally:
            if browser is not None:
                browser.terminate()
                try:
                    browser.wait(10)
                except subprocess.TimeoutExpired:
                    browser.kill()
                    browser.wait()
            launcher.send_signal(signal.SIGINT)  # what Ctrl-C does in a terminal
            launcher.wait(120)
            print(log_path.read_text(errors="replace")[-1500:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
