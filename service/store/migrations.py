"""Versioned schema migrations, one sequence per feature namespace.

Each namespace (``core``, ``projects``, ``prompts``...) owns an ordered list of
SQL scripts. Script *i* brings the namespace from version *i* to *i + 1*; the
reached version is stored in ``schema_versions(namespace, version)``. Each
script runs in its own transaction together with its version bump, so a
failing script leaves the namespace at the previous version and the error
propagates (the service does not start on a half-migrated schema).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from service.store.dialect import SQLITE, Migration

NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_versions (
    namespace TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)
"""


class MigrationError(Exception):
    """A migration script failed, or the database is newer than this code."""


def validate_namespace(namespace: str) -> None:
    if not NAMESPACE_RE.match(namespace):
        raise ValueError(f"invalid schema namespace {namespace!r}: use [a-z][a-z0-9_]*")


def check_version(namespace: str, version: int, scripts: Sequence[Migration]) -> None:
    if version > len(scripts):
        raise MigrationError(
            f"schema {namespace!r} is at version {version}, newer than this code "
            f"knows ({len(scripts)}): refusing to run an older release on it"
        )


def apply_migrations(
    conn: sqlite3.Connection, schemas: dict[str, list[Migration]]
) -> dict[str, int]:
    """Bring every namespace of ``schemas`` to its latest version (SQLite); the
    versions. (PostgreSQL's counterpart: :func:`service.store.postgres.migrate`.)

    ``conn`` must be in autocommit mode (``isolation_level=None``)."""
    conn.execute(BOOTSTRAP)
    current = dict(conn.execute("SELECT namespace, version FROM schema_versions").fetchall())
    versions: dict[str, int] = {}
    for namespace, scripts in schemas.items():
        version = int(current.get(namespace, 0))
        check_version(namespace, version, scripts)
        for index in range(version, len(scripts)):
            try:
                # executescript commits any open transaction first, so the
                # script carries its own BEGIN/COMMIT with the version bump.
                conn.executescript(
                    "BEGIN IMMEDIATE;\n"
                    + SQLITE.script(scripts[index])
                    + ";\nINSERT INTO schema_versions(namespace, version) "
                    + f"VALUES ('{namespace}', {index + 1}) "
                    + f"ON CONFLICT(namespace) DO UPDATE SET version = {index + 1};\n"
                    + "COMMIT;"
                )
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise MigrationError(
                    f"migration {namespace} {index} -> {index + 1} failed: {exc}"
                ) from exc
        versions[namespace] = len(scripts)
    return versions
