from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg import backend, mark_pg, module_server, pg_server, pg_url, store_url
from tests.utils import RunningServer, new_marker, start_server, wait_no_marked

# The PostgreSQL fixtures (tests/pg.py).
__all__ = ["backend", "module_server", "pg_server", "pg_url", "store_url"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_pg(items)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server per test worker, with default settings (short kill grace)."""
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    running.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers with particular settings; each is stopped after the test."""
    started: list[RunningServer] = []

    def make(settings: dict[str, Any] | None = None, **kwargs: Any) -> RunningServer:
        data_dir = kwargs.pop("data_dir", None) or tmp_path / f"server{len(started)}"
        data_dir.mkdir(parents=True, exist_ok=True)
        running = start_server(data_dir, settings, **kwargs)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop(signal.SIGTERM)


@pytest.fixture
def marker() -> Iterator[dict[str, str]]:
    """An ``env`` that marks every process a test starts; after the test, no
    process may still carry the marker."""
    value, env = new_marker()
    yield env
    leftovers = wait_no_marked(value)
    assert not leftovers, f"processes left behind: {leftovers}"
