"""PostgreSQL for the tests: one throwaway server per xdist worker, a fresh
database per test, and the ``backend`` parameter that runs a test on both
engines.

``pg_server`` starts the server once per worker (``service/client/postgres.py``:
``initdb`` as the ``postgres`` user, ``pg_ctl`` on a free loopback port);
``pg_url`` creates a database for one test and drops it after. A test that
takes ``backend`` runs twice, ``[sqlite]`` and ``[postgres]``; ``store_url``
is then None or a fresh database's URL. Every test that uses PostgreSQL gets
the ``pg`` marker (``pytest -m pg``, ``-m "not pg"``). PostgreSQL missing is
an error, not a skip: ``ci/install`` installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.client.postgres import PostgresServer
from tests.utils import RunningServer, start_server

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database on this worker's server, dropped after the test.
    (A test that stopped the server gets it back running first.)"""
    url = pg_server.create_database()
    yield url
    if not pg_server.running:
        pg_server.start()
    pg_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None on ``[sqlite]``; a fresh database's URL on ``[postgres]``."""
    if backend == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


def mark_pg(items: list[pytest.Item]) -> None:
    """Give the ``pg`` marker to every test that reaches PostgreSQL."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("backend") == "postgres"
        on_postgres = on_postgres or (
            callspec is not None and callspec.params.get("module_server") == "postgres"
        )
        if on_postgres or ("backend" not in names and {"pg_server", "pg_url"} & set(names)):
            item.add_marker(pytest.mark.pg)


def on_store(make_server: Callable[..., Any], store_url: str | None) -> Callable[..., Any]:
    """``make_server`` whose servers all keep their store at ``store_url``
    (None: each in its data directory, as always). On PostgreSQL the servers
    of one test share its database, so a restarted server finds its data."""

    def make(settings: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        merged = dict(settings or {})
        if store_url is not None:
            merged.setdefault("store_url", store_url)
        return make_server(merged, **kwargs)

    return make


@pytest.fixture(scope="module", params=BACKENDS)
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server per module and engine (for tests that share a server)."""
    settings: dict[str, Any] = {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        settings["store_url"] = server.create_database()
    running = start_server(tmp_path_factory.mktemp("server"), settings)
    yield running
    running.stop()
