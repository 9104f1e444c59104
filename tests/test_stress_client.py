"""The harness's RpcClient against a real server, under gevent as in Locust.

A user stopped at the end of a run while its ``execute`` is in flight never
learns the execution it started; ``RpcClient.settle`` hands it over so
``on_stop`` cancels it, instead of leaving it to the server's detach grace
(where the orphan gate found it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, sys, gevent
from stress.rpc_client import RpcClient

url, env = sys.argv[1], json.loads(sys.argv[2])
client = RpcClient(url)
client.connect()
caller = gevent.spawn(client.call, "execute", {"argv": ["sleep", "30"], "env": env})
gevent.sleep(0)  # the request is sent; the reply is not read yet
caller.kill()  # what Locust does to a user at the run's end
started = client.settle(5)
for execution_id in started:
    client.call("control", {"type": "CANCEL", "execution_id": execution_id})
print(json.dumps({"started": started, "again": client.settle(0)}))
client.close()
"""


def test_an_execute_abandoned_in_flight_is_handed_over(
    make_server: Any, marker: dict[str, str]
) -> None:
    server = make_server({"pass_env": ["PATH", "HOME", "LANG", next(iter(marker))]})
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, server.url, json.dumps(marker)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result["started"]) == 1 and result["again"] == []
    # The marker fixture then checks the cancelled `sleep 30` is gone.
