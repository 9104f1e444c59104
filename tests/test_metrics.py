"""``/metrics``: a real server scraped before and after real executions and
controls; every counter and histogram must move by exactly what happened."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.client import ExecutorClient
from service.errors import RpcError
from tests.utils import runner

run = runner(90)

TOKEN = "metrics-test-token"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(url: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            return response.status, response.headers.get("Content-Type", ""), body
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def scrape(base_url: str) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own parser."""
    status, content_type, body = fetch(base_url + "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain"), content_type
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_counters_and_histograms_follow_executions_and_controls(
    make_server: Any, marker: dict[str, str]
) -> None:
    running = make_server({"token": TOKEN})
    base = running.http_url

    async def main() -> tuple[Samples, Samples, Samples, Samples]:
        before = scrape(base)
        async with ExecutorClient(running.url, TOKEN) as client:
            # 3893 bytes on stdout: the digits of 1..1000, each with its newline.
            seq = await client.run(argv=["seq", "1", "1000"], env=marker, wait_timeout=20)
            assert seq.status == "completed"
            failed = await client.run(
                argv=["sh", "-c", "echo oops >&2; exit 3"], env=marker, wait_timeout=20
            )
            assert failed.status == "failed"
            with pytest.raises(RpcError):
                await client.execute(argv=["/nonexistent/ccx-binary"])  # never runs
            sleeper = await client.execute(argv=["sleep", "30"], env=marker)
            await sleeper.pause()
            during = await asyncio.to_thread(scrape, base)
            await sleeper.resume()
            await sleeper.cancel()
            result = await sleeper.wait(20)
            assert result.status == "cancelled"
            with pytest.raises(RpcError):
                await sleeper.pause()  # finished: -32005
            with pytest.raises(RpcError):
                await client.call("no.such.method")
            connected = await asyncio.to_thread(scrape, base)
        for _ in range(100):  # the server notices the close asynchronously
            after = await asyncio.to_thread(scrape, base)
            if value(after, "cc_executor_connections") == 0:
                break
            await asyncio.sleep(0.05)
        return before, during, connected, after

    before, during, connected, after = run(main())

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert delta("cc_executor_executions_total", status="completed") == 1
    assert delta("cc_executor_executions_total", status="failed") == 2  # exit 3, cannot exec
    assert delta("cc_executor_executions_total", status="cancelled") == 1
    assert delta("cc_executor_executions_total", status="timed_out") == 0
    assert delta("cc_executor_output_bytes_total", stream="stdout") == 3893
    assert delta("cc_executor_output_bytes_total", stream="stderr") == len("oops\n")
    assert delta("cc_executor_output_dropped_chunks_total") == 0
    # Three processes ran (seq, sh, sleep); the missing binary never did.
    assert delta("cc_executor_spawn_seconds_count") == 3
    assert delta("cc_executor_execution_duration_seconds_count") == 3
    assert delta("cc_executor_execution_duration_seconds_sum") > 0
    for kind in ("PAUSE", "RESUME", "CANCEL"):
        assert delta("cc_executor_control_seconds_count", type=kind) == 1, kind
    # CANCEL's effect is the end of the execution: SIGTERM kills sleep at once.
    assert 0 < delta("cc_executor_control_seconds_sum", type="CANCEL") < 5
    assert delta("cc_executor_control_seconds_bucket", type="CANCEL", le="+Inf") == 1
    assert delta("cc_executor_requests_total", method="execute", outcome="ok") == 3
    assert delta("cc_executor_requests_total", method="execute", outcome="invalid_params") == 1
    assert delta("cc_executor_requests_total", method="control", outcome="ok") == 3
    assert delta("cc_executor_requests_total", method="control", outcome="invalid_state") == 1
    assert delta("cc_executor_requests_total", method="other", outcome="method_not_found") == 1
    assert value(during, "cc_executor_executions_live", state="paused") == 1
    assert value(during, "cc_executor_executions_live", state="running") == 0
    assert value(after, "cc_executor_executions_live", state="paused") == 0
    assert value(connected, "cc_executor_connections") == 1
    assert value(after, "cc_executor_connections") == 0
    # The library's process collector reports the server's own figures.
    assert value(after, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert value(after, "process_open_fds") > 0
    # No execution id anywhere in the label sets.
    for _name, labels in after:
        for _key, label in labels:
            assert len(label) < 32, label


def test_metrics_needs_the_token_and_can_be_turned_off(make_server: Any) -> None:
    secured = make_server({"token": TOKEN})
    assert fetch(secured.http_url + "/metrics", token=None)[0] == 401
    assert fetch(secured.http_url + "/metrics", token="wrong")[0] in (401, 403)
    assert fetch(secured.http_url + "/metrics")[0] == 200
    assert fetch(secured.http_url + "/healthz", token=None)[0] == 200

    disabled = make_server({"metrics_enabled": "false"})
    assert fetch(disabled.http_url + "/metrics", token=None)[0] == 404
    assert fetch(disabled.http_url + "/health", token=None)[0] == 200


def test_each_server_has_its_own_registry(tmp_path: Any) -> None:
    """Two services in one process: no duplicate-name clash, no shared figures."""
    from prometheus_client import generate_latest

    from service.server.root import compose
    from service.settings import Settings

    first = compose(Settings(data_dir=tmp_path / "one")).services
    second = compose(Settings(data_dir=tmp_path / "two")).services
    first.metrics.request("status", None)
    first.metrics.dropped_chunk()
    assert first.metrics.registry is not None and second.metrics.registry is not None
    one = generate_latest(first.metrics.registry).decode()
    two = generate_latest(second.metrics.registry).decode()
    assert 'cc_executor_requests_total{method="status",outcome="ok"} 1.0' in one
    assert "cc_executor_output_dropped_chunks_total 1.0" in one
    assert 'method="status"' not in two
    assert "cc_executor_output_dropped_chunks_total 0.0" in two
    disabled = compose(Settings(data_dir=tmp_path / "three", metrics_enabled=False)).services
    assert disabled.metrics.registry is None
