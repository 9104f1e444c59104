"""The stress harness's pure parts: gates, option parsing, URLs, figures."""

from __future__ import annotations

import argparse

import pytest

from stress import metrics
from stress.gates import Bounds, NameStats, Orphan, RunFigures, evaluate, passed
from stress.rss import rss_from_health, rss_from_proc
from stress.settings import RunSettings, http_url, ws_url

MB = 1_000_000


def stats(requests: int = 100, failures: int = 0, control_p95: float = 50) -> list[NameStats]:
    return [
        NameStats("execute", requests, failures, 10, 20, 30),
        NameStats("control", 10, 0, 5, control_p95, control_p95),
    ]


def failed_gates(figures: RunFigures, bounds: Bounds | None = None) -> list[str]:
    return [g.name for g in evaluate(figures, bounds or Bounds()) if not g.passed]


def test_clean_run_passes_every_gate() -> None:
    gates = evaluate(RunFigures(stats(), 60 * MB), Bounds())
    assert passed(gates), gates
    assert {g.name for g in gates} == {
        "requests",
        "failures",
        "task errors",
        "control p95",
        "server RSS",
        "orphans",
    }


def test_failures_over_one_percent_fail() -> None:
    # 110 requests in all: 1 failure is 0.9 %, 2 are 1.8 %.
    assert failed_gates(RunFigures(stats(failures=1), 60 * MB)) == []
    assert failed_gates(RunFigures(stats(failures=2), 60 * MB)) == ["failures"]


def test_no_request_at_all_fails() -> None:
    assert "requests" in failed_gates(RunFigures([], 60 * MB))


def test_control_p95_bound() -> None:
    figures = RunFigures(stats(control_p95=2500), 60 * MB)
    assert failed_gates(figures) == ["control p95"]
    assert failed_gates(figures, Bounds(control_p95_ms=3000)) == []


def test_rss_bound_and_unsampled_rss() -> None:
    assert failed_gates(RunFigures(stats(), 101 * MB)) == ["server RSS"]
    assert failed_gates(RunFigures(stats(), None)) == ["server RSS"]
    assert failed_gates(RunFigures(stats(), None), Bounds(max_rss_mb=0)) == []


def test_orphans_and_task_errors_fail() -> None:
    orphan = Orphan(123, "sleep 100")
    gates = evaluate(RunFigures(stats(), MB, [orphan]), Bounds())
    assert [g.name for g in gates if not g.passed] == ["orphans"]
    assert "123: sleep 100" in next(g.detail for g in gates if g.name == "orphans")
    assert failed_gates(RunFigures(stats(), MB, task_errors=1)) == ["task errors"]


def options(**overrides: object) -> argparse.Namespace:
    from stress.settings import add_arguments

    class Parser(argparse.ArgumentParser):
        def add_argument(self, *args: object, **kwargs: object) -> argparse.Action:
            kwargs.pop("is_secret", None)
            kwargs.pop("include_in_web_ui", None)
            kwargs.pop("env_var", None)
            return super().add_argument(*args, **kwargs)  # type: ignore[arg-type]

    parser = Parser()
    add_arguments(parser)
    namespace = parser.parse_args([])
    vars(namespace).update(overrides)
    return namespace


def test_settings_defaults_and_marker() -> None:
    run = RunSettings.from_options(options(run_marker="CCX_X=abc"))
    assert run.job_s == 90 and run.max_rss_mb == 100 and run.max_fail_ratio == 0.01
    assert run.marker_env() == {"CCX_X": "abc"}
    assert "ControlUser" in run.users


@pytest.mark.parametrize(
    "overrides",
    [{"stress_users": "ControlUser,NoSuchUser"}, {"run_marker": "no-equals-sign"}],
)
def test_settings_refuse_bad_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RunSettings.from_options(options(**overrides))


def test_urls_from_locust_host() -> None:
    assert ws_url("ws://127.0.0.1:1/ws/mcp") == "ws://127.0.0.1:1/ws/mcp"
    assert ws_url("http://127.0.0.1:1") == "ws://127.0.0.1:1/ws/mcp"
    assert ws_url("https://h:2/") == "wss://h:2/ws/mcp"
    assert ws_url("127.0.0.1:3") == "ws://127.0.0.1:3/ws/mcp"
    assert ws_url("ws://h:4/ws?token=t") == "ws://h:4/ws?token=t"
    assert http_url("wss://h:5/ws/mcp", "/health") == "https://h:5/health"


def test_rss_sources() -> None:
    assert rss_from_health({"rss_bytes": 5}) == 5
    assert rss_from_health({"process": {"rss_bytes": 6}}) == 6
    assert rss_from_health({"status": "ok"}) is None
    import os

    assert (rss_from_proc(os.getpid()) or 0) > MB
    assert rss_from_proc(2**22 + 1) is None


def test_worker_figures_are_added_up_on_the_master() -> None:
    metrics.FIGURES.reset()
    metrics.record_stream(nbytes=100, lines=10, seconds=1.0, dropped=0, gaps=0, first_output_ms=5)
    shipped: dict[str, object] = {}
    metrics.to_master(shipped)
    assert metrics.FIGURES.stream.runs == 0  # reset once shipped
    metrics.record_skip("ReconnectUser", "no attach")
    metrics.to_master(second := {})
    metrics.FIGURES.reset()
    metrics.from_worker("w1", {"stats": [{"num_requests": 3}], **shipped})
    metrics.from_worker("w2", {"stats": [{"num_requests": 4}], **second})
    figures = metrics.FIGURES
    assert figures.requests_by_worker == {"w1": 3, "w2": 4}
    assert figures.stream.runs == 1 and figures.stream.bytes == 100
    assert figures.skipped == {"ReconnectUser": "no attach"}
    metrics.FIGURES.reset()
