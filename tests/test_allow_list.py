"""The allow-list means the program the operator named (issue #14, item 1).

An entry allows exactly the name or path it spells: another name or path for
the same file (symlink, hard link, multi-call binary) is refused, exec runs
the file that was checked, and the child gets the client's argv[0].
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.client import ExecutorClient
from service.errors import NotAllowed
from service.process.spawn import check_allowed
from tests.utils import run


def test_another_name_for_the_same_file_is_refused(tmp_path: Path) -> None:
    echo = shutil.which("echo")
    assert echo is not None
    link = tmp_path / "my-echo"
    link.symlink_to(echo)
    hard = tmp_path / "hard-echo"
    try:
        os.link(os.path.realpath(echo), hard)
    except OSError:
        hard = link  # another file system: the symlink case covers it
    assert check_allowed("echo", ["echo"]) == os.path.realpath(echo)
    for argv0 in (str(link), str(hard), echo, "./echo", "ECHO", "echo "):
        with pytest.raises(NotAllowed):
            check_allowed(argv0, ["echo"])
    # A path entry allows that path only, not the bare name that finds it.
    assert check_allowed(str(link), [str(link)]) == os.path.realpath(echo)
    with pytest.raises(NotAllowed):
        check_allowed("echo", [str(link)])


@pytest.mark.parametrize(
    ("listed", "other"),
    [("rbash", "bash"), ("xzcat", "xz"), ("bash", "rbash"), ("xz", "xzcat")],
)
def test_multi_call_binaries_answer_to_their_listed_name_only(listed: str, other: str) -> None:
    if shutil.which(listed) is None or shutil.which(other) is None:
        pytest.skip(f"{listed} or {other} is not installed")
    assert os.path.realpath(shutil.which(listed) or "") == os.path.realpath(
        shutil.which(other) or ""
    ), "the pair is one file under two names"
    check_allowed(listed, [listed])
    with pytest.raises(NotAllowed):
        check_allowed(other, [listed])


def test_missing_listed_program_is_refused() -> None:
    with pytest.raises(NotAllowed, match="not found"):
        check_allowed("no-such-program-here", ["no-such-program-here"])


@pytest.mark.skipif(shutil.which("rbash") is None, reason="rbash is not installed")
def test_rbash_stays_restricted(make_server: Any, marker: dict[str, str], tmp_path: Path) -> None:
    """The issue's example: rbash listed must run a restricted bash, and bash is refused."""
    server = make_server({"allowed_commands": ["rbash", "echo"]})
    target = tmp_path / "F"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            script = f"echo $0; shopt -q restricted_shell && echo restricted; echo hi > {target}"
            result = await client.run(argv=["rbash", "-c", script], env=marker)
            assert result.stdout.splitlines()[:2] == ["rbash", "restricted"], result
            for argv0 in ("bash", "/usr/bin/rbash", "/bin/bash"):
                with pytest.raises(NotAllowed):
                    await client.execute(argv=[argv0, "-c", "id"], env=marker)

    run(main())
    assert not target.exists(), "rbash refused the redirection"


def test_child_gets_the_clients_argv0(make_server: Any, marker: dict[str, str]) -> None:
    """With and without an allow-list, argv[0] is what the client sent, not the
    resolved path (multi-call programs choose their behaviour by it)."""
    open_server = make_server()
    listed = make_server({"allowed_commands": ["cat"]})

    async def main() -> None:
        for server in (open_server, listed):
            async with ExecutorClient(server.url) as client:
                result = await client.run(argv=["cat", "/proc/self/cmdline"], env=marker)
                assert result.stdout.split("\0")[:2] == ["cat", "/proc/self/cmdline"]

    run(main())
