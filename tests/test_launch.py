"""The launcher every tool starts its own server with (service/client/launch.py):
the port from the ``listening`` line, and why a server that exits first did."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.client.launch import ServerStartError, error_message, listening_port, run_server


def server_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CC_EXECUTOR_")}
    env["CC_EXECUTOR_DATA_DIR"] = str(data_dir)
    return env


def test_log_lines_are_read_for_the_port_and_the_errors() -> None:
    assert listening_port('{"message": "listening", "port": 8123}') == 8123
    assert listening_port(b'{"message": "listening", "port": 8123}') == 8123
    assert listening_port('{"message": "store opened"}') is None
    assert listening_port("listening on 8123") is None  # not JSON
    assert listening_port("[1, 2]") is None  # JSON, not an object
    assert error_message('{"level": "ERROR", "message": "cannot open"}') == "cannot open"
    assert error_message('{"level": "CRITICAL", "message": "gone"}') == "gone"
    assert error_message('{"level": "WARNING", "message": "slow"}') is None
    assert error_message("Traceback (most recent call last):") is None


@pytest.mark.parametrize("to_file", [False, True], ids=["piped", "to-file"])
def test_a_server_that_exits_first_says_why(tmp_path: Path, to_file: bool) -> None:
    """A second server on a data directory another holds exits at once; the
    error names the holder, in either log mode."""
    first = run_server(server_env(tmp_path), timeout_s=60)
    try:
        with pytest.raises(ServerStartError) as refused:
            run_server(
                server_env(tmp_path),
                log_path=tmp_path / "second.log" if to_file else None,
                timeout_s=60,
            )
        assert refused.value.errors, str(refused.value)
        assert f"in use by another cc-executor (pid {first.pid})" in refused.value.errors[-1]
    finally:
        assert first.stop() == 0
