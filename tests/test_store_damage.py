"""A damaged store loses nothing silently and never hangs a client.

Detected damage (a file cut in half, 64 KiB of garbage in the middle): the
file is moved aside and what is readable is salvaged into the fresh database,
reported in ``store.salvage``. Damage that passes ``quick_check`` (bytes
overwritten inside a chunk's data): a read that hits it answers -32007
``STORE_ERROR``, and ``attach`` ends with ``process.error``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from service.client import ExecutionError, ExecutorClient
from service.projects import storage
from service.settings import Settings
from service.store.database import DB_NAME
from service.store.salvage import _recover_with_shell
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE
from service.store.sqlite import SqliteStore as Store
from tests.utils import RunningServer, run

EXECUTIONS = 40
CHUNKS_PER_EXECUTION = 50
MESSAGES = 400


def open_store(data_dir: Path) -> Store:
    store = Store(Settings(data_dir=data_dir))
    store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
    store.register_schema(storage.NAMESPACE, storage.MIGRATIONS)
    return store


def fill(data_dir: Path) -> None:
    """A store with executions, their transcripts, a project and its history."""

    def job(conn: Any) -> None:
        for e in range(EXECUTIONS):
            conn.execute(
                "INSERT INTO executions (id, server_id, argv, state, created_at, updated_at) "
                "VALUES (?, 'old', '[\"echo\"]', 'completed', ?, ?)",
                (f"e{e}", float(e), float(e)),
            )
            conn.executemany(
                "INSERT INTO chunks (execution_id, seq, stream, data, nbytes, ts) "
                "VALUES (?, ?, 'stdout', ?, 200, 0)",
                [(f"e{e}", s, f"{e}:{s} " + "y" * 200) for s in range(1, CHUNKS_PER_EXECUTION + 1)],
            )
        conn.execute(
            "INSERT INTO projects (id, name, path, created_at) VALUES ('p1', 'p', '/p', 0)"
        )
        conn.executemany(
            "INSERT INTO project_messages (project_id, ts, kind, data) VALUES ('p1', ?, 'e', ?)",
            [(float(i), json.dumps({"i": i, "pad": "z" * 300})) for i in range(MESSAGES)],
        )

    async def main() -> None:
        store = open_store(data_dir)
        await store.open()
        await store.write(job)
        await store.close()

    run(main())


def counts(store: Store) -> dict[str, int]:
    def read(conn: Any) -> dict[str, int]:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("executions", "chunks", "projects", "project_messages")
        }

    return dict(run(store.read(read)))


def reopen(data_dir: Path) -> tuple[Store, dict[str, Any], dict[str, int]]:
    store = open_store(data_dir)
    run(store.open())
    try:
        health = store.health()
        assert "salvage" in health, health
        return store, health["salvage"], counts(store)
    finally:
        run(store.close())


def recover_works(scratch: Path) -> bool:
    scratch.mkdir()
    probe = scratch / "probe.db"
    conn = sqlite3.connect(probe)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    return _recover_with_shell(probe, scratch / "out.db") is None


def cut_in_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 // 4096 * 4096])


def garbage_in_the_middle(path: Path) -> None:
    raw = path.read_bytes()
    middle = len(raw) // 2 // 4096 * 4096
    path.write_bytes(raw[:middle] + b"\xa5" * 65536 + raw[middle + 65536 :])


@pytest.mark.parametrize("damage", [cut_in_half, garbage_in_the_middle])
@pytest.mark.parametrize("with_shell", [True, False], ids=["recover", "row-copy"])
def test_detected_damage_is_salvaged_and_reported(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
    with_shell: bool,
) -> None:
    if not with_shell:
        monkeypatch.setenv("PATH", "/nonexistent")  # no sqlite3 shell: the row copy
    elif not recover_works(tmp_path / "probe"):
        pytest.skip("this sqlite3 shell's .recover does not work (no dbpage support)")
    fill(tmp_path)
    damage(tmp_path / DB_NAME)
    store, salvage, found = reopen(tmp_path)
    assert store.corrupt_moved_to is not None and Path(salvage["moved_to"]).exists()
    assert salvage["method"] == ("sqlite3 .recover" if with_shell else "row copy")
    assert salvage["error"] is None
    # Something of every kind survives, and not everything (the damage is real).
    total = EXECUTIONS * CHUNKS_PER_EXECUTION
    assert 0 < found["chunks"] < total, found
    assert found["executions"] > 0, found
    assert found["projects"] == 1, found
    if damage is garbage_in_the_middle:
        assert 0 < found["project_messages"] <= MESSAGES, found
    assert salvage["tables"]["chunks"]["salvaged"] == found["chunks"]
    assert salvage["salvaged_rows"] == sum(found.values()), (salvage, found)


def test_salvaged_rows_are_intact(tmp_path: Path) -> None:
    fill(tmp_path)
    garbage_in_the_middle(tmp_path / DB_NAME)
    store = open_store(tmp_path)
    run(store.open())
    try:
        rows = run(
            store.read(lambda c: c.execute("SELECT execution_id, seq, data FROM chunks").fetchall())
        )
        assert rows
        for execution_id, seq, data in rows:
            assert data == f"{execution_id[1:]}:{seq} " + "y" * 200
    finally:
        run(store.close())


# --- damage that quick_check does not see ----------------------------------------------


def damage_a_chunk(path: Path, needle: bytes) -> None:
    """Overwrite 100 bytes inside one chunk's data with invalid UTF-8: the
    b-tree stays sound (quick_check passes), reading that row fails."""
    raw = path.read_bytes()
    at = raw.index(needle)
    path.write_bytes(raw[:at] + b"\xff" * 100 + raw[at + 100 :])


def get_health(server: RunningServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.http_url + "/health", timeout=5) as response:
        return dict(json.load(response))


def test_a_damaged_page_answers_store_error_and_attach_ends(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = make_server(data_dir=data_dir)
    line = "q" * 300

    async def produce() -> str:
        async with ExecutorClient(server.url) as client:
            done = await client.run(
                argv=["python3", "-c", "print('q' * 300)"], env=marker, timeout=20
            )
            assert done.status == "completed"
            return done.execution_id

    execution_id = run(produce())
    server.stop()
    damage_a_chunk(data_dir / DB_NAME, line.encode()[:100])
    again = make_server(data_dir=data_dir)
    assert "salvage" not in get_health(again)["store"], "quick_check must not see this damage"

    async def check() -> None:
        async with connect(again.url, open_timeout=10) as ws:
            await ws.recv()  # connected

            async def call(request_id: int, method: str, params: dict[str, Any]) -> Any:
                await ws.send(
                    json.dumps(
                        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
                    )
                )
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if message.get("id") == request_id:
                        return message

            reply = await call(1, "transcript.get", {"execution_id": execution_id})
            assert reply["error"]["code"] == -32007, reply
            assert reply["error"]["data"]["error"] == "STORE_ERROR"

            reply = await call(2, "attach", {"execution_id": execution_id})
            assert "result" in reply, reply
            assert reply["result"]["status"] == "attached"
            ending = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ending["method"] == "process.error", ending
            assert ending["params"]["execution_id"] == execution_id
            assert ending["params"]["error_name"] == "STORE_ERROR"

            # The connection and the rest of the store still work.
            reply = await call(3, "executions.list", {})
            assert [row["execution_id"] for row in reply["result"]["executions"]] == [execution_id]

    async def with_the_client() -> None:
        async with ExecutorClient(again.url) as client:
            attached = await client.attach(execution_id)
            with pytest.raises(ExecutionError, match="store error"):
                await attached.wait(10)

    run(check())
    run(with_the_client())
    assert not [e for e in again.logs if e.get("level") == "ERROR" and "Traceback" in str(e)]
