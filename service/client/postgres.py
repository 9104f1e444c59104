"""A throwaway PostgreSQL server: for tests, benchmarks and local clusters.

:class:`PostgresServer` runs ``initdb`` into a temporary directory, starts the
server with ``pg_ctl`` on a free loopback port (its unix socket in that
directory too, so it never meets the system's cluster), and hands out
``postgresql://postgres@127.0.0.1:PORT/DB`` URLs of fresh databases.
:meth:`~PostgresServer.stop` and :meth:`~PostgresServer.start` take the server
away and bring it back on the same port with the same data (what a test of
"the database went down" needs); :meth:`~PostgresServer.close` stops it and
removes the directory. Use it as a context manager::

    with PostgresServer() as pg:
        url = pg.create_database()

PostgreSQL refuses to run as root. As root (the CI and development machines
are), every server command runs as the ``postgres`` system user that the
Debian package creates (``runuser -u postgres --``) and the directory is
given to that user; as anyone else, the commands run as that user.

The binaries come from ``pg_config --bindir`` when that directory has
``initdb`` (Debian keeps the server's binaries off PATH), else the newest
``/usr/lib/postgresql/*/bin``; ``ci/install`` installs the package. The
server trusts every loopback connection (``initdb --auth=trust``) and
listens on ``127.0.0.1`` only: it is for throwaway data, never for a
deployment.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

#: The server's settings for tests: no fsync (the data is thrown away), little
#: memory (several servers share a small machine).
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "200",
}
#: For benchmarks: PostgreSQL's own durable defaults, memory kept small.
DURABLE_SETTINGS = {"shared_buffers": "64MB", "max_connections": "200"}
SYSTEM_USER = "postgres"
START_TIMEOUT_S = 60
START_TRIES = 3


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's binaries are missing, or the server would not start."""


def find_bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``; PostgresUnavailable without one."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb under pg_config --bindir or "
        "/usr/lib/postgresql/*/bin): run ci/install"
    )


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throwaway PostgreSQL server in a temporary directory.

    ``settings`` are passed to the server as ``-c name=value``
    (:data:`FAST_SETTINGS` by default). Not thread-safe; one owner."""

    def __init__(
        self,
        *,
        settings: dict[str, str] | None = None,
        bindir: Path | None = None,
        parent_dir: Path | None = None,
    ) -> None:
        self.settings = dict(FAST_SETTINGS if settings is None else settings)
        self.bindir = bindir or find_bindir()
        self._parent_dir = parent_dir
        self.base: Path | None = None
        self.port: int | None = None
        self.running = False
        self._as_root = os.geteuid() == 0

    # --- paths -------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.base is not None, "the server was never started"
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None, "the server was never started"
        return self.base / "sock"

    @property
    def log_path(self) -> Path:
        assert self.base is not None, "the server was never started"
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server (over TCP on loopback)."""
        assert self.port is not None, "the server was never started"
        return f"postgresql://{SYSTEM_USER}@127.0.0.1:{self.port}/{database}"

    # --- life ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create the cluster the first time, then start the server (again, after
        :meth:`stop`, on the same port with the same data). Returns once it
        accepts connections."""
        if self.running:
            return
        if self.base is None:
            self._init()
        attempts = START_TRIES if self.port is None else 1
        for attempt in range(attempts):
            port = self.port if self.port is not None else free_port()
            try:
                self._pg_ctl_start(port)
            except PostgresUnavailable:
                if attempt == attempts - 1:
                    raise
                continue  # the port was taken between free_port() and the bind
            self.port = port
            self.running = True
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect every client; ``immediate``:
        as a crash would). The data stays for :meth:`start`."""
        if not self.running:
            return
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        self.running = False

    def close(self) -> None:
        """Stop the server and remove its directory. Safe to call twice."""
        if self.running:
            with contextlib.suppress(PostgresUnavailable):
                self.stop("immediate")
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    # --- databases -----------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database (a random name by default); its URL."""
        import psycopg  # only the callers that want a database pay for the import
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still on it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # --- the commands ----------------------------------------------------------------

    def _init(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="cc-pg-", dir=self._parent_dir))
        try:
            (base / "sock").mkdir()
            if self._as_root:
                user = pwd.getpwnam(SYSTEM_USER)
                for path in (base, base / "sock"):
                    os.chown(path, user.pw_uid, user.pw_gid)
            self.base = base
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(base / "data"),
                    "-U",
                    SYSTEM_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            self.base = None
            raise

    def _pg_ctl_start(self, port: int) -> None:
        options = [f"-p {port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                " ".join(options),
                "start",
            ]
        )

    def _run(self, argv: list[str]) -> None:
        if self._as_root:
            argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S + 30,
                cwd="/",
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{Path(argv[0]).name}: {exc}") from exc
        if done.returncode != 0:
            tail = self._log_tail()
            raise PostgresUnavailable(
                f"{' '.join(argv[-1:])} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}{tail}"
            )

    def _log_tail(self) -> str:
        if self.base is None:
            return ""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()[-5:]
            return "\n" + "\n".join(lines) if lines else ""
        return ""
