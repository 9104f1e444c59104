"""The store cap holds over every namespace, and retention never eats what was
just written: real servers, real agent floods (fake-claude), real files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.client import ExecutorClient
from service.store.database import DB_NAME
from tests.pg import on_store
from tests.test_projects import agent_settings, create_project, run_agent
from tests.utils import RunningServer, health, runner

run = runner(120)

CAP = 1024 * 1024
FILES_BOUND = 2 * CAP + 8 * 1024 * 1024
FLOOD = "fake:flood=300"  # 300 events of 16 KiB: about 5 MB per run, twice stored


@pytest.fixture
def make_server(
    make_server: Callable[..., RunningServer], store_url: str | None
) -> Callable[..., RunningServer]:
    """Both tests run on both engines (tests/pg.py)."""
    return on_store(make_server, store_url)


def files_bytes(data_dir: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        path = data_dir / (DB_NAME + suffix)
        if path.exists():
            total += path.stat().st_size
    return total


def server_with_root(
    make_server: Callable[..., RunningServer], tmp_path: Path, **settings: Any
) -> tuple[RunningServer, Path]:
    root = tmp_path / "root"
    (root / "p").mkdir(parents=True)
    server = make_server(
        agent_settings(
            root, max_store_bytes=CAP, retention_interval_s=1, kill_grace_s=1, **settings
        ),
        data_dir=tmp_path / "data",
    )
    return server, root / "p"


async def floods(client: ExecutorClient, project_id: str, env: dict[str, str]) -> list[str]:
    ids = []
    for _ in range(3):
        started, result = await run_agent(client, project_id, FLOOD, env)
        assert result.status == "completed", result.completed
        ids.append(started["execution_id"])
    return ids


def test_retention_spares_young_executions_and_reports_over_cap(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    # The default retention_min_age_s (600 s): nothing here is old enough to go.
    server, project_dir = server_with_root(make_server, tmp_path)
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake")}

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            tiny = await client.run(argv=["echo", "tiny output"], env=marker)
            project_id = await create_project(client, "p", project_dir)
            ids = await floods(client, project_id, env)
            await asyncio.sleep(2.5)  # two more retention passes
            page = await client.call("transcript.get", {"execution_id": tiny.execution_id})
            assert [c["data"] for c in page["chunks"]] == ["tiny output\n"]
            for execution_id in ids:
                page = await client.call("transcript.get", {"execution_id": execution_id})
                assert page["chunks"], execution_id
            messages = await client.call("messages.get", {"project_id": project_id})
            assert messages["messages"][0]["kind"] == "prompt"  # the first one is still there

    run(main())
    store = health(server)["store"]
    assert store["over_cap"] is True and store["used_bytes"] > CAP, store
    warnings = [e for e in server.logs if e.get("message", "").startswith("store over its cap")]
    assert len(warnings) == 1, warnings  # said once, not at every pass


def test_the_cap_holds_over_every_namespace(
    make_server: Callable[..., RunningServer],
    marker: dict[str, str],
    tmp_path: Path,
    backend: str,
) -> None:
    """On SQLite the files stay within the bound; on PostgreSQL, whose tables
    keep their size and reuse the space, the data they hold is what the cap
    counts (service/store/retention.py), so only that is checked."""
    server, project_dir = server_with_root(make_server, tmp_path, retention_min_age_s=0)
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake")}
    data_dir = tmp_path / "data"

    async def main() -> tuple[str, list[str]]:
        async with ExecutorClient(server.url) as client:
            project_id = await create_project(client, "p", project_dir)
            ids = await floods(client, project_id, env)
            # A last, small run: the newest, which the cap has room for.
            started, result = await run_agent(client, project_id, "hello", env)
            assert result.status == "completed"
            return project_id, [*ids, started["execution_id"]]

    project_id, ids = run(main())
    on_sqlite = backend == "sqlite"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        store = health(server)["store"]
        if not store["over_cap"] and (not on_sqlite or files_bytes(data_dir) <= FILES_BOUND):
            break
        time.sleep(0.5)
    if on_sqlite:
        size = files_bytes(data_dir)
        sizes = {p.name: p.stat().st_size for p in data_dir.glob(DB_NAME + "*")}
        assert size <= FILES_BOUND, f"store files {size} bytes, bound {FILES_BOUND}: {sizes}"
    assert store["over_cap"] is False, store

    async def check() -> None:
        async with ExecutorClient(server.url) as client:
            # History was trimmed oldest first: what is left is the newest.
            project = await client.call("project.get", {"project_id": project_id})
            assert project["runs"] == 4
            page = await client.call("messages.get", {"project_id": project_id, "limit": 1000})
            kept = page["messages"]
            assert kept, "the newest history is kept"
            assert kept[-1]["execution_id"] == ids[-1]
            assert all(m["execution_id"] != ids[0] for m in kept), "the oldest run's went first"

    run(check())
    deleted = [e for e in server.logs if e.get("message") == "retention deleted executions"]
    assert any(e["deleted"].get("project_messages") for e in deleted), deleted
