"""``python -m stress.bench.store_backends``: the store's engines and drivers, measured.

Two comparisons, each run round after round (A B A B) in one process so both
sides see the same noise of a shared machine; the table gives medians over
rounds and the ratio measured in this run:

- **drivers** on one throwaway PostgreSQL (``service/client/postgres.py``):
  psycopg 3 (what the store uses: synchronous, in the writer thread,
  ``executemany`` with binary parameters, pipelined, in one transaction per
  batch) against asyncpg
  (``executemany`` in a transaction on the event loop), for the writer's
  batched chunk inserts (the recorder's ``INSERT`` into ``chunks``) and for a
  point read (one execution row by id, as ``status``/``attach`` read it);
- **engines**: the store itself (:func:`service.store.make_store`, the core
  schema, the recorder's statements through ``Store.submit``), SQLite
  against PostgreSQL, in chunks per second through the writer until
  committed.

PostgreSQL runs with its durable defaults (``synchronous_commit=on``: one WAL
flush per commit) unless ``--async-commit``, which is closer to SQLite's
``synchronous=NORMAL`` in WAL mode (no flush per commit). asyncpg comes from
the ``bench`` extra (``pip install -e .[bench]``); the service does not use it.
The figures are printed, not judged: benchmarks are not timed tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from service.client.postgres import DURABLE_SETTINGS, FAST_SETTINGS, PostgresServer
from service.settings import Settings
from service.store import Store, make_store
from service.store.rows import INSERT_CHUNK
from service.store.schema import CORE_MIGRATIONS, CORE_NAMESPACE

CHUNK_DATA = "x" * 99 + "\n"  # a 100-byte output line
TABLE = """
CREATE TABLE chunks (
    execution_id TEXT NOT NULL, seq BIGINT NOT NULL, stream TEXT NOT NULL,
    data BYTEA NOT NULL, nbytes BIGINT NOT NULL, truncated BIGINT NOT NULL DEFAULT 0,
    ts DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX chunks_seq ON chunks(execution_id, seq);
CREATE TABLE executions (id TEXT PRIMARY KEY, state TEXT NOT NULL, last_seq BIGINT NOT NULL);
"""
PG_INSERT = (
    "INSERT INTO chunks (execution_id, seq, stream, data, nbytes, truncated, ts) "
    "VALUES ({}) ON CONFLICT DO NOTHING"
)


def rows_for(execution_id: str, start: int, count: int) -> list[tuple[Any, ...]]:
    data = CHUNK_DATA.encode()
    now = time.time()
    return [
        (execution_id, seq, "stdout", data, len(data), 0, now)
        for seq in range(start, start + count)
    ]


# --- drivers -----------------------------------------------------------------------


def psycopg_inserts(url: str, batches: int, batch_rows: int) -> float:
    """Seconds for ``batches`` transactions of ``batch_rows`` chunk rows each."""
    sql = PG_INSERT.format(", ".join(["%s"] * 7))
    execution_id = uuid.uuid4().hex
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for index in range(batches):
            with conn.cursor(binary=True) as cursor:  # as the store's PgConnection does
                cursor.executemany(sql, rows_for(execution_id, index * batch_rows, batch_rows))
            conn.commit()
        return time.perf_counter() - started


async def asyncpg_inserts(url: str, batches: int, batch_rows: int) -> float:
    import asyncpg

    sql = PG_INSERT.format(", ".join(f"${i}" for i in range(1, 8)))
    execution_id = uuid.uuid4().hex
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for index in range(batches):
            async with conn.transaction():
                await conn.executemany(sql, rows_for(execution_id, index * batch_rows, batch_rows))
        return time.perf_counter() - started
    finally:
        await conn.close()


def seed_executions(url: str, count: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(count)]
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO executions (id, state, last_seq) VALUES (%s, 'completed', 1)",
            [(key,) for key in ids],
        )
    return ids


def psycopg_reads(url: str, ids: list[str]) -> list[float]:
    """Seconds per point read (autocommit, as the store's readers)."""
    took = []
    with psycopg.connect(url, autocommit=True) as conn:
        for key in ids:
            started = time.perf_counter()
            conn.execute("SELECT id, state, last_seq FROM executions WHERE id = %s", (key,))
            took.append(time.perf_counter() - started)
    return took


async def asyncpg_reads(url: str, ids: list[str]) -> list[float]:
    import asyncpg

    took = []
    conn = await asyncpg.connect(url)
    try:
        for key in ids:
            started = time.perf_counter()
            await conn.fetchrow("SELECT id, state, last_seq FROM executions WHERE id = $1", key)
            took.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return took


# --- engines -----------------------------------------------------------------------


async def store_throughput(store: Store, batches: int, batch_rows: int) -> float:
    """Seconds to commit ``batches`` recorder-like jobs through the store's writer."""
    store.register_schema(CORE_NAMESPACE, CORE_MIGRATIONS)
    await store.open()
    try:
        execution_id = uuid.uuid4().hex
        text = store.dialect.text_blob(CHUNK_DATA)
        started = time.perf_counter()
        for index in range(batches):
            rows = [
                (execution_id, seq, "stdout", text, len(CHUNK_DATA), 0, time.time())
                for seq in range(index * batch_rows, (index + 1) * batch_rows)
            ]

            def job(conn: Any, rows: list[Any] = rows) -> None:
                conn.executemany(INSERT_CHUNK, rows)

            await store.room()  # back off as the recorder does
            store.submit(job, weight=len(rows), nbytes=len(rows) * len(CHUNK_DATA))
        await store.write(lambda conn: None)
        return time.perf_counter() - started
    finally:
        await store.close()


# --- the run -----------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(DURABLE_SETTINGS)
    if args.async_commit:
        settings["synchronous_commit"] = "off"
    if args.fast_pg:
        settings = dict(FAST_SETTINGS)
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with PostgresServer(settings=settings) as pg, tempfile.TemporaryDirectory() as tmp:
        drivers_url = pg.create_database("drivers")
        with psycopg.connect(drivers_url, autocommit=True) as conn:
            conn.execute(TABLE)
        ids = seed_executions(drivers_url, args.reads)
        chunks = args.batches * args.batch_rows
        sizes = (args.batches, args.batch_rows)
        for round_index in range(args.rounds):
            took = await asyncio.to_thread(
                psycopg_inserts, drivers_url, args.batches, args.batch_rows
            )
            add("psycopg insert chunks/s", chunks / took)
            took = await asyncpg_inserts(drivers_url, args.batches, args.batch_rows)
            add("asyncpg insert chunks/s", chunks / took)
            reads = await asyncio.to_thread(psycopg_reads, drivers_url, ids)
            add("psycopg point read p50 us", statistics.median(reads) * 1e6)
            add("psycopg point read p99 us", sorted(reads)[int(len(reads) * 0.99)] * 1e6)
            reads = await asyncpg_reads(drivers_url, ids)
            add("asyncpg point read p50 us", statistics.median(reads) * 1e6)
            add("asyncpg point read p99 us", sorted(reads)[int(len(reads) * 0.99)] * 1e6)

            sqlite = make_store(Settings(data_dir=Path(tmp) / f"s{round_index}"))
            add("sqlite store chunks/s", chunks / await store_throughput(sqlite, *sizes))
            url = pg.create_database(f"store{round_index}")
            postgres = make_store(Settings(data_dir=Path(tmp) / f"p{round_index}", store_url=url))
            add("postgres store chunks/s", chunks / await store_throughput(postgres, *sizes))
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {"settings": settings, "medians": medians, "rounds": results}


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    m = figures["medians"]
    rows = [
        ("batched chunk inserts (chunks/s)", "psycopg 3", m["psycopg insert chunks/s"],
         "asyncpg", m["asyncpg insert chunks/s"],
         _ratio(m["psycopg insert chunks/s"], m["asyncpg insert chunks/s"])),
        ("point read p50 (us)", "psycopg 3", m["psycopg point read p50 us"],
         "asyncpg", m["asyncpg point read p50 us"],
         _ratio(m["asyncpg point read p50 us"], m["psycopg point read p50 us"])),
        ("point read p99 (us)", "psycopg 3", m["psycopg point read p99 us"],
         "asyncpg", m["asyncpg point read p99 us"],
         _ratio(m["asyncpg point read p99 us"], m["psycopg point read p99 us"])),
        ("store writes (chunks/s)", "sqlite", m["sqlite store chunks/s"],
         "postgres", m["postgres store chunks/s"],
         _ratio(m["sqlite store chunks/s"], m["postgres store chunks/s"])),
    ]  # fmt: skip
    lines = [
        "| what | A | A's figure | B | B's figure | A better by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for what, a, av, b, bv, ratio in rows:
        lines.append(f"| {what} | {a} | {av:,.0f} | {b} | {bv:,.0f} | {ratio} |")
    load = os.getloadavg()
    lines.append("")
    lines.append(
        f"{args.rounds} rounds, {args.batches} batches x {args.batch_rows} rows of "
        f"{len(CHUNK_DATA)} B, {args.reads} point reads; PostgreSQL settings "
        f"{figures['settings']}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} CPUs (a shared machine: noisy)"
    )
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-rows", type=int, default=500)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument(
        "--async-commit", action="store_true", help="PostgreSQL with synchronous_commit=off"
    )
    parser.add_argument(
        "--fast-pg", action="store_true", help="PostgreSQL without fsync (the tests' settings)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(main(args))
    print(report(figures, args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    cli()
