"""The Grafana dashboard in deploy/ queries only metrics a live server exports,
and (where promtool is installed) every query is valid PromQL."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.client import ExecutorClient

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "cc-executor.json"
#: Grafana's variables, as a scrape-time Prometheus would see them.
VARIABLES = {"$__rate_interval": "5m", "$job": ".*"}
NAME = re.compile(r"\b((?:cc_executor|process)_[a-z0-9_]+)\b")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def test_every_dashboard_metric_is_in_a_live_scrape(make_server: Any) -> None:
    running = make_server()

    async def one_request() -> None:
        # Request counters have a sample once a request was answered.
        async with ExecutorClient(running.url) as client:
            await client.call("status")

    asyncio.run(asyncio.wait_for(one_request(), 30))
    with urllib.request.urlopen(running.http_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    queried = {name for expr in expressions() for name in NAME.findall(expr)}
    assert len(queried) >= 12, queried
    missing = sorted(queried - exported)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"
    # And the dashboard covers every family the service itself exports.
    families = {name for name in exported if name.startswith("cc_executor_")}
    uncovered = {
        name
        for name in families
        if not any(name.startswith(q.removesuffix("_bucket")) for q in queried)
    }
    assert not {n for n in uncovered if not n.endswith("_created")}, uncovered


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = []
    for index, expr in enumerate(expressions()):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query{index}", "expr": expr})
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
