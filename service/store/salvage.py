"""Salvage: copy what is readable of a damaged database into the fresh one.

When the database fails its check at open (:mod:`service.store.files`), it is
moved aside and a fresh database takes its place; then every table the fresh
schema has is filled from the damaged file, row by row, as far as it can be
read. Two readers, best first:

- SQLite's recovery (the ``sqlite3`` shell's ``.recover``, from the Debian
  package ``sqlite3``) rebuilds what it can find page by page into a scratch
  database, even past a broken b-tree; rows it cannot place go to its
  ``lost_and_found`` table, which is counted, not copied;
- without the shell, the damaged file itself is read in rowid order, skipping
  ahead past pages that fail.

Rows keep their rowid (so execution order, message cursors and
AUTOINCREMENT sequences survive); columns are matched by name, so a damaged
file of an older schema version still gives what the two share. What was
salvaged per table, and how many reads failed, is returned for ``/health``
(``store.salvage``) and the log. Nothing here raises: a salvage that fails
leaves the fresh database as it is and says why.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Rows read per query while copying.
PAGE_ROWS = 500
#: How far the row copy jumps past a failing read before it gives a table up:
#: rowid + 1, + 2, + 4 ... + 2**MAX_SKIPS.
MAX_SKIPS = 40
RECOVER_TIMEOUT_S = 300.0
SKIPPED_TABLES = ("schema_versions", "sqlite_sequence", "sqlite_stat1")


@dataclass
class SalvageReport:
    """What a salvage got back: rows per table, failed reads, the method used."""

    moved_to: str
    method: str = "none"
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    lost_and_found_rows: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "moved_to": self.moved_to,
            "method": self.method,
            "tables": self.tables,
            "salvaged_rows": sum(t["salvaged"] for t in self.tables.values()),
            "failed_reads": sum(t["failed_reads"] for t in self.tables.values()),
            "lost_and_found_rows": self.lost_and_found_rows,
            "error": self.error,
        }


def _recover_with_shell(damaged: Path, scratch: Path) -> str | None:
    """Run ``sqlite3 DAMAGED .recover | sqlite3 SCRATCH``; why it failed, or None."""
    shell = shutil.which("sqlite3")
    if shell is None:
        return "the sqlite3 shell is not installed"
    with contextlib.suppress(FileNotFoundError):
        scratch.unlink()
    dump = subprocess.Popen(
        [shell, str(damaged), ".recover"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        load = subprocess.run(
            [shell, str(scratch)],
            stdin=dump.stdout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=RECOVER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f".recover took longer than {RECOVER_TIMEOUT_S:g}s"
    finally:
        if dump.stdout is not None:
            dump.stdout.close()
        try:
            dump.wait(RECOVER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()
    try:
        check = sqlite3.connect(f"file:{scratch}?mode=ro", uri=True)
        try:
            tables = check.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            check.close()
    except sqlite3.Error as exc:
        tables, load_error = 0, str(exc)
    else:
        load_error = load.stderr.decode(errors="replace").strip()[:200]
    if not tables:
        # Some builds of the shell lack the page-reading tables .recover needs
        # ("SQL logic error"): then the row copy does the work.
        return f".recover produced nothing ({load_error or 'no tables'})"
    return None


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(f'PRAGMA {schema}.table_info("{table}")').fetchall()
    return [str(row[1]) for row in rows]


def _copy_table(
    source: sqlite3.Connection, target: sqlite3.Connection, table: str
) -> dict[str, int]:
    wanted = _columns(target, "main", table)
    have = set(_columns(source, "main", table))
    columns = [name for name in wanted if name in have]
    counts = {"salvaged": 0, "failed_reads": 0}
    if not columns:
        return counts
    quoted = ", ".join(f'"{name}"' for name in columns)
    select = f'SELECT rowid, {quoted} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT ?'
    insert = (
        f'INSERT OR IGNORE INTO "{table}" (rowid, {quoted}) '
        f"VALUES ({', '.join('?' * (len(columns) + 1))})"
    )
    after = 0  # the service's tables never use rowids below 1
    limit = PAGE_ROWS
    skips = 0
    while True:
        try:
            rows = source.execute(select, (after, limit)).fetchall()
        except sqlite3.DatabaseError:
            if limit > 1:
                limit = 1  # take the rows before the bad page one by one
                continue
            counts["failed_reads"] += 1
            if skips >= MAX_SKIPS:
                break
            after += 2**skips  # jump past the page that fails, further each time
            skips += 1
            continue
        if not rows:
            break
        skips = 0
        limit = PAGE_ROWS
        for row in rows:
            with contextlib.suppress(sqlite3.DatabaseError):
                counts["salvaged"] += target.execute(insert, row).rowcount
        after = int(rows[-1][0])
    return counts


def salvage_into(damaged: Path, target: sqlite3.Connection) -> SalvageReport:
    """Copy what can be read of ``damaged`` into ``target`` (the fresh, migrated
    database, in autocommit mode); the report. Never raises."""
    report = SalvageReport(moved_to=str(damaged))
    scratch = damaged.with_name(damaged.name + ".recovered")
    source_path = damaged
    problem = _recover_with_shell(damaged, scratch)
    if problem is None:
        source_path = scratch
        report.method = "sqlite3 .recover"
    else:
        report.method = "row copy"
        logger.info("store salvage without .recover: %s", problem)
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, isolation_level=None)
        # With writable_schema, SQLite reads a file shorter than its header
        # says (a truncated copy) up to its real end instead of refusing it.
        source.execute("PRAGMA writable_schema = ON")
    except sqlite3.Error as exc:
        report.error = f"cannot open the damaged file: {exc}"
        return report
    try:
        tables = [
            str(row[0])
            for row in target.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
            if row[0] not in SKIPPED_TABLES
        ]
        with contextlib.suppress(sqlite3.DatabaseError):
            found = source.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            names = {str(row[0]) for row in found}
            if "lost_and_found" in names:
                report.lost_and_found_rows = int(
                    source.execute("SELECT count(*) FROM lost_and_found").fetchone()[0]
                )
        target.execute("BEGIN")
        for table in tables:
            try:
                report.tables[table] = _copy_table(source, target, table)
            except sqlite3.DatabaseError as exc:
                # The table is unknown to the damaged file (its schema page is
                # gone, or it is newer than the file).
                report.tables[table] = {"salvaged": 0, "failed_reads": 1}
                logger.info("store salvage: table %s unreadable: %s", table, exc)
        target.execute("COMMIT")
    except sqlite3.Error as exc:
        report.error = f"salvage failed: {exc}"
        if target.in_transaction:
            target.execute("ROLLBACK")
    finally:
        source.close()
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    return report
