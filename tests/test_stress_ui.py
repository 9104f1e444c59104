"""The Locust web UI as ``make stress-ui`` serves it: defaults that match
docs/stress.md, readable option names, waits that are not latency, and a
quiet Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# stress.rpc_user imports Locust, which monkey-patches the process with gevent:
# run it in a child, not in the test worker.
WAIT_CHECK = """
import time
from stress.rpc_user import RpcUser

class Recorder:
    reports = []
    def report(self, name, response_time_ms, *rest):
        self.reports.append(response_time_ms)

recorder = Recorder()
with RpcUser.step(recorder, "verify: held") as step:
    time.sleep(0.3)
    step.waited()
with RpcUser.step(recorder, "verify: slow") as step:
    time.sleep(0.3)
print(*recorder.reports)
"""


def test_a_wait_the_scenario_asks_for_is_not_latency() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WAIT_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    held, slow = map(float, done.stdout.split())
    assert held < 100 <= 300 <= slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def template_args(url: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline, f"no web UI at {url}"
            time.sleep(0.3)
    found = re.search(r"templateArgs = (\{.*?\})\s*$", page, re.MULTILINE)
    assert found, page[:500]
    args: dict[str, Any] = json.loads(found.group(1))
    return args


def test_the_web_ui_defaults_and_a_quiet_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_EXECUTOR_", "STRESS_"))}
    env["STRESS_REPORTS"] = str(tmp_path)
    log = (tmp_path / "launcher.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "stress.launch", "--ui", "--", "--web-port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        args = template_args(f"http://127.0.0.1:{port}/")
    finally:
        launcher.send_signal(signal.SIGINT)  # Ctrl-C
        launcher.wait(60)
        log.close()
    output = (tmp_path / "launcher.log").read_text()
    # docs/stress.md: the default mix is all but JobUser; 8 users at 4 per second.
    assert args["available_user_classes"] == [
        "AgentUser",
        "ControlUser",
        "ReconnectUser",
        "StreamUser",
    ]
    assert (args["num_users"], args["spawn_rate"]) == (8, 4)
    options = args["extra_options"]
    # The UI labels a field after its name: plain words, no digits to split.
    assert not [name for name in options if re.search(r"\d", name)]
    assert "control_latency_gate_ms" in options and "job_seconds" in options
    # Plumbing that ci/stress fills in is not a form field.
    assert not {"run_marker", "server_pid", "project_root", "summary_json"} & set(options)
    assert "KeyboardInterrupt" not in output and "Traceback" not in output, output
    assert "stress summary" in output
