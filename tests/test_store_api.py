"""The generic Store API, in process, on both engines: a real SQLite file and a
real PostgreSQL database (tests/pg.py). The damaged-file and lock tests are
SQLite's alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.client.postgres import PostgresServer
from service.settings import Settings
from service.store import MigrationError, Store, StoreClosed, StoreError, make_store
from service.store.sqlite import SqliteStore
from tests.utils import runner

run = runner(20)


def sqlite_store(tmp_path: Path, **fields: Any) -> SqliteStore:
    return SqliteStore(Settings(data_dir=tmp_path, **fields))


@pytest.fixture
def make(request: pytest.FixtureRequest, store_url: str | None) -> Callable[..., Store]:
    """``make(path, **settings)``: a store of this test's engine; on PostgreSQL
    each distinct path is a database of its own, as each is a file on SQLite."""
    urls: dict[Path, str | None] = {}

    def build(path: Path, **fields: Any) -> Store:
        if path not in urls:
            if store_url is None or not urls:
                urls[path] = store_url
            else:
                server: PostgresServer = request.getfixturevalue("pg_server")
                urls[path] = server.create_database()
        return make_store(Settings(data_dir=path, store_url=urls[path], **fields))

    return build


V1 = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
V2 = "ALTER TABLE notes ADD COLUMN tag TEXT; INSERT INTO notes(body, tag) VALUES ('v2', 'x')"


def test_migrations_are_versioned_per_namespace(
    tmp_path: Path, make: Callable[..., Store], backend: str
) -> None:
    async def main() -> None:
        store = make(tmp_path)
        store.register_schema("notes", [V1])
        store.register_schema("other", ["CREATE TABLE other (x TEXT)"])
        await store.open()
        assert store.schema_version("notes") == 1
        await store.write(lambda c: c.execute("INSERT INTO notes(body) VALUES ('one')"))
        with pytest.raises(StoreError):
            store.register_schema("late", [V1])
        await store.close()
        await store.close()  # twice is fine

        store = make(tmp_path)
        store.register_schema("notes", [V1, V2])  # only V2 runs now
        store.register_schema("other", ["CREATE TABLE other (x TEXT)"])
        await store.open()
        rows = await store.read(
            lambda c: c.execute("SELECT body, tag FROM notes ORDER BY id").fetchall()
        )
        assert rows == [("one", None), ("v2", "x")]
        assert store.schema_version("notes") == 2
        if backend == "sqlite":
            journal = await store.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
            assert journal == "wal"
        await store.close()

        older = make(tmp_path)
        older.register_schema("notes", [V1])
        with pytest.raises(MigrationError, match="newer than this code"):
            await older.open()

        broken = make(tmp_path / "b")
        broken.register_schema("bad", [V1, "CREATE TABLE notes (again)"])
        with pytest.raises(MigrationError, match="bad 1 -> 2"):
            await broken.open()

    run(main())


def test_a_failing_write_rolls_back_alone(tmp_path: Path, make: Callable[..., Store]) -> None:
    async def main() -> None:
        store = make(tmp_path)
        store.register_schema("notes", [V1])
        await store.open()

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO notes(body) VALUES ('lost')")
            raise ValueError("no")

        good = store.write(lambda c: c.execute("INSERT INTO notes(body) VALUES ('kept')").rowcount)
        results = await asyncio.gather(good, store.write(bad), return_exceptions=True)
        assert results[0] == 1 and isinstance(results[1], ValueError)
        bodies = await store.read(lambda c: c.execute("SELECT body FROM notes").fetchall())
        assert bodies == [("kept",)]
        with pytest.raises(StoreError, match=r"read-?only"):  # readers cannot write
            await store.read(lambda c: c.execute("INSERT INTO notes(body) VALUES ('x')"))
        await store.close()
        with pytest.raises(StoreClosed):
            await store.read(lambda c: None)

    run(main())


def test_a_stalled_writer_never_blocks_the_event_loop(
    tmp_path: Path, make: Callable[..., Store]
) -> None:
    """A writer stuck on the disk (here: a job that waits) fills the queue;
    producers see it congested and ``write`` waits for room, while the event
    loop keeps running on time. Closing drains every queued job."""

    async def main() -> None:
        store = make(tmp_path, store_queue_chunks=100)
        store.register_schema("notes", [V1])
        await store.open()
        stall = threading.Event()
        store.submit(lambda c: stall.wait(10))
        store.submit(lambda c: c.execute("INSERT INTO notes(body) VALUES ('queued')"), 150)
        assert store.congested
        writing = asyncio.create_task(
            store.write(lambda c: c.execute("INSERT INTO notes(body) VALUES ('waited')"))
        )
        late = []
        for _ in range(20):
            before = time.monotonic()
            await asyncio.sleep(0.01)
            late.append(time.monotonic() - before - 0.01)
        assert max(late) < 0.2, "the event loop stalled"
        assert not writing.done()
        stall.set()
        await writing
        assert not store.congested
        store.submit(lambda c: c.execute("INSERT INTO notes(body) VALUES ('at close')"))
        await store.close()

        store = make(tmp_path)
        store.register_schema("notes", [V1])
        await store.open()
        bodies = await store.read(lambda c: c.execute("SELECT body FROM notes").fetchall())
        assert sorted(bodies) == [("at close",), ("queued",), ("waited",)]
        await store.close()

    run(main())


def test_a_damaged_file_is_moved_aside(tmp_path: Path) -> None:
    async def main() -> None:
        (tmp_path / "cc-executor.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\x07" * 8000)
        store = sqlite_store(tmp_path)
        store.register_schema("notes", [V1])
        await store.open()
        assert store.corrupt_moved_to is not None and store.corrupt_moved_to.exists()
        assert store.health()["corrupt_reason"].startswith("damaged")
        await store.write(lambda c: c.execute("INSERT INTO notes(body) VALUES ('fresh')"))
        await store.close()

    run(main())


def test_a_store_cut_in_the_middle_is_moved_aside(tmp_path: Path) -> None:
    """A real store with a damaged page (a bad disk, a bad copy) is detected too."""

    async def main() -> None:
        store = sqlite_store(tmp_path)
        store.register_schema("notes", [V1])
        await store.open()
        for _ in range(20):
            await store.write(
                lambda c: c.executemany("INSERT INTO notes(body) VALUES (?)", [("x" * 500,)] * 50)
            )
        await store.close()
        path = store.path
        raw = path.read_bytes()
        middle = len(raw) // 2 // 4096 * 4096
        path.write_bytes(raw[:middle] + b"\xff" * 4096 + raw[middle + 4096 :])
        again = sqlite_store(tmp_path)
        again.register_schema("notes", [V1])
        await again.open()
        assert again.corrupt_moved_to is not None
        assert again.corrupt_reason is not None and again.corrupt_reason.startswith("damaged")
        # What is readable is salvaged (tests/test_store_damage.py covers it in depth).
        (kept,) = await again.read(lambda c: c.execute("SELECT count(*) FROM notes").fetchone())
        assert 0 < kept < 1000
        assert again.health()["salvage"]["tables"]["notes"]["salvaged"] == kept
        await again.close()

    run(main())


def test_one_data_directory_one_server(tmp_path: Path, make: Callable[..., Store]) -> None:
    """A second store on the same directory is refused: its restart recovery
    would take the first server's executions for a crash's leftovers. (On
    PostgreSQL too: the data directory stays one server's.)"""

    async def main() -> None:
        first = make(tmp_path)
        await first.open()
        second = make(tmp_path)
        with pytest.raises(StoreError, match="in use by another cc-executor"):
            await second.open()
        await first.close()
        await second.open()
        await second.close()

    run(main())


def test_sqlite_page_caches_are_bounded(tmp_path: Path) -> None:
    """The writer's and the readers' page caches are CACHE_KIB, not SQLite's
    2000 KiB default: the writer's filled under any steady output and was most
    of a flooded server's growth (docs/performance.md)."""
    from service.store.sqlite import CACHE_KIB

    async def main() -> None:
        store = sqlite_store(tmp_path)
        await store.open()
        try:
            pragma = "PRAGMA cache_size"
            assert await store.write(lambda c: c.execute(pragma).fetchone()[0]) == -CACHE_KIB
            assert await store.read(lambda c: c.execute(pragma).fetchone()[0]) == -CACHE_KIB
        finally:
            await store.close()

    assert CACHE_KIB < 2000
    run(main())
