"""Settings at their edges: an empty value means unset, a named file that is
not there stops the start with one line naming the setting (exit 2), and a
wss:// server is trusted through the system store (``SSL_CERT_FILE``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from service.client import ExecutorClient
from service.settings import Settings
from tests.test_tls import make_certificate
from tests.utils import RunningServer, serve_stopping

OPTIONAL = sorted(name for name, field in Settings.model_fields.items() if field.default is None)
FILES = sorted(
    name
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, types.UnionType) and Path in typing.get_args(field.annotation)
)


SCALARS = sorted(
    name
    for name, field in Settings.model_fields.items()
    if typing.get_origin(field.annotation) is not list
)
LISTS = sorted(set(Settings.model_fields) - set(SCALARS))


def test_an_empty_value_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting given empty in the environment: the default, or for a list
    the empty list (docs/configuration.md)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"CC_EXECUTOR_{name.upper()}", raising=False)
    defaults = Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    for name in Settings.model_fields:
        monkeypatch.setenv(f"CC_EXECUTOR_{name.upper()}", "")
    empty = Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    assert {name: empty[name] for name in SCALARS} == {name: defaults[name] for name in SCALARS}
    assert {name: empty[name] for name in LISTS} == {name: [] for name in LISTS}


def test_the_edges_are_known() -> None:
    # If a setting is added, it is covered below without touching this file.
    assert {"token_file", "ssl_certfile", "ssl_keyfile", "default_timeout_s"} <= set(OPTIONAL)
    assert FILES == ["ssl_certfile", "ssl_keyfile", "token_file"]


@pytest.mark.parametrize("name", OPTIONAL)
def test_an_empty_optional_setting_means_unset(
    name: str, make_server: Callable[..., RunningServer]
) -> None:
    running = make_server({name: ""})
    assert running.proc.poll() is None
    assert Settings.model_validate({name: ""}).model_dump()[name] is None


@pytest.mark.parametrize("name", FILES)
def test_a_file_setting_pointing_nowhere_exits_2_naming_it(name: str, tmp_path: Path) -> None:
    done = serve_stopping(tmp_path, {f"CC_EXECUTOR_{name.upper()}": str(tmp_path / "missing.pem")})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"CC_EXECUTOR_{name.upper()}" in lines[0] and "no such file" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_a_directory_or_half_a_tls_pair_exits_2(tmp_path: Path) -> None:
    done = serve_stopping(tmp_path, {"CC_EXECUTOR_TOKEN_FILE": str(tmp_path)})
    assert done.returncode == 2 and "not a file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    cert, _ = make_certificate(tmp_path)
    done = serve_stopping(tmp_path, {"CC_EXECUTOR_SSL_CERTFILE": str(cert)})
    assert done.returncode == 2 and "set both or neither" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_wss_trusted_through_the_system_store(
    make_server: Callable[..., RunningServer],
    marker: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = make_certificate(tmp_path)
    running = make_server(
        extra_args=["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], scheme="wss"
    )
    cli = [sys.executable, "-m", "service", "run", "--url", running.url, "--", "echo", "trusted"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_EXECUTOR_", "SSL_CERT"))}
    env.update(marker)
    # Not in the system store: refused with one line, no traceback.
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 255, refused.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr and "Traceback" not in refused.stderr
    # SSL_CERT_FILE is the system store OpenSSL reads: the CLI trusts the server...
    trusted = subprocess.run(
        cli, env={**env, "SSL_CERT_FILE": str(cert)}, capture_output=True, text=True, timeout=30
    )
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout == "trusted\n"
    # ... and so does the client library, with no ssl argument at all.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            result = await client.run(argv=["echo", "library"], env=marker)
            assert result.stdout == "library\n"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_cafile_adds_to_the_system_store(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    """With SSL_CERT_FILE trusting server A and --cafile trusting server B,
    one command line reaches both."""
    servers, certs = [], []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cert, key = make_certificate(tmp_path / name)
        certs.append(cert)
        servers.append(
            make_server(
                extra_args=["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], scheme="wss"
            )
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_EXECUTOR_", "SSL_CERT"))}
    env.update(marker, SSL_CERT_FILE=str(certs[0]))
    for running in servers:
        cli = [sys.executable, "-m", "service", "run", "--url", running.url]
        done = subprocess.run(
            [*cli, "--cafile", str(certs[1]), "--", "echo", "added"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0 and done.stdout == "added\n", done.stderr
