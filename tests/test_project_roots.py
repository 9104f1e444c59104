"""Project roots are checked again at every use: a registered directory that
became a symlink out of the roots is refused (-32602 ``INVALID_PATH``), and
agents run in the real path of the moment."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from service.client import ExecutorClient
from service.errors import InvalidParams
from tests.test_projects import agent_events, agent_settings, create_project, run_agent
from tests.utils import RunningServer, run


def test_a_project_swapped_for_a_symlink_out_of_the_roots_is_refused(
    make_server: Callable[..., RunningServer], marker: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "p1").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    outside.mkdir()
    server = make_server(agent_settings(root, kill_grace_s=1))
    env = {**marker, "FAKE_CLAUDE_STATE_DIR": str(tmp_path / "fake")}

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            project_id = await create_project(client, "p1", root / "p1")
            _, first = await run_agent(client, project_id, "hello", env)
            assert agent_events(first)[0]["cwd"] == str(root / "p1")

            os.rename(root / "p1", root / "p1_moved")
            os.symlink(outside, root / "p1")
            with pytest.raises(InvalidParams) as refused:
                await run_agent(client, project_id, "hello", env)
            assert refused.value.data["error"] == "INVALID_PATH"
            assert refused.value.data["resolved"] == str(outside)
            assert not list(outside.iterdir()), "nothing ran in the outside directory"

            # A symlink that stays inside the roots runs, in its real path.
            os.unlink(root / "p1")
            os.symlink(root / "elsewhere", root / "p1")
            _, moved = await run_agent(client, project_id, "hello", env, resume=False)
            assert agent_events(moved)[0]["cwd"] == str(root / "elsewhere")

            os.unlink(root / "p1")
            with pytest.raises(InvalidParams, match="no longer exists"):
                await run_agent(client, project_id, "hello", env)

    run(main())
    assert [e for e in server.logs if e.get("level") == "ERROR"] == []
