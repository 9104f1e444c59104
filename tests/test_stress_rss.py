"""The stress harness reads a server's RSS from the server itself when it did
not start it (no ``--server-pid``): /metrics, else /health, with the token."""

from __future__ import annotations

from typing import Any

from stress.rss import RssSampler, rss_from_metrics

TOKEN = "rss-test-token"


def test_rss_from_metrics_text() -> None:
    text = "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1.2e+07\n"
    assert rss_from_metrics(text) == 12_000_000
    assert rss_from_metrics("# TYPE other gauge\nother 1\n") is None


def test_sampler_reads_a_running_server(make_server: Any) -> None:
    running = make_server({"token": TOKEN})
    sampler = RssSampler(0, running.http_url, 0.5, TOKEN)
    sampler.take()
    sampler.take()
    real = running.rss_bytes()
    assert sampler.samples == 2
    assert sampler.peak_bytes is not None and 0.5 * real < sampler.peak_bytes < 2 * real
    assert sampler.source == running.http_url + "/metrics"
    # Without the token the server refuses both: nothing sampled, no crash.
    assert RssSampler(0, running.http_url, 0.5, None).sample() is None


def test_sampler_falls_back_to_health(make_server: Any) -> None:
    running = make_server({"token": TOKEN, "metrics_enabled": "false"})
    sampler = RssSampler(0, running.http_url, 0.5, TOKEN)
    value = sampler.sample()
    assert value is not None and value > 10 * 1024 * 1024
    assert sampler.source == running.http_url + "/health"
