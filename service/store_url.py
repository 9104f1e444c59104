"""``CC_EXECUTOR_STORE_URL``: which store backend a server uses. Pure code.

Unset (or empty): the embedded SQLite database in ``data_dir``, as always.
``postgresql://...`` (or ``postgres://...``, libpq's URI form, with
``?sslmode=...`` and the like): a shared PostgreSQL database. Anything else is
refused at start with one line (exit 2), never guessed at. The password of a
URL never reaches a log line, ``/health`` or an error: :func:`redact`.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator

Backend = Literal["sqlite", "postgresql"]
POSTGRES_SCHEMES = ("postgresql", "postgres")


def check_store_url(value: str | None) -> str | None:
    """The URL as given, or ValueError naming what is accepted."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            f"unsupported store URL {redact(value)!r}: leave it unset for the embedded "
            "SQLite store, or give postgresql://USER@HOST:PORT/DB"
        )
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ValueError(f"malformed store URL {redact(value)!r}: {exc}") from None
    return value


def backend_of(url: str | None) -> Backend:
    return "sqlite" if url is None else "postgresql"


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


StoreUrl = Annotated[str | None, AfterValidator(check_store_url)]
