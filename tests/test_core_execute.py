"""execute, input, status and the error codes, against a real server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from service.client import ExecutorClient
from service.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    INVALID_STATE,
    LIMIT_REACHED,
    METHOD_NOT_FOUND,
    NOT_ALLOWED,
    NOT_FOUND,
    PARSE_ERROR,
    RATE_LIMITED,
    InvalidParams,
    InvalidState,
    LimitReached,
    NotAllowed,
    NotFound,
)
from tests.utils import RunningServer, runner

run = runner(90)

PY = sys.executable


def test_connected_notification(server: RunningServer) -> None:
    async def main() -> None:
        async with websockets.connect(server.url) as ws:
            message = orjson.loads(await ws.recv())
            assert message["method"] == "connected"
            params = message["params"]
            assert params["session_id"] and params["version"]
            for method in ("execute", "control", "input", "status"):
                assert method in params["capabilities"]

    run(main())


def test_alias_path_and_stdout_stderr_separation(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        url = server.url.replace("/ws/mcp", "/ws")
        async with ExecutorClient(url) as client:
            script = "import sys\nfor i in range(3):\n print('o', i, flush=True); print('e', i, file=sys.stderr, flush=True)"
            result = await client.run(argv=[PY, "-c", script], env=marker)
            assert result.stdout == "o 0\no 1\no 2\n"
            assert result.stderr == "e 0\ne 1\ne 2\n"
            assert result.completed["stdout_bytes"] == len(result.stdout)
            assert result.completed["stderr_bytes"] == len(result.stderr)

    run(main())


def test_seq_200000_exact_with_contiguous_seq_and_completion_last(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute("seq 1 200000", env=marker)
            result = await execution.wait(60)
            assert result.status == "completed" and result.exit_code == 0
            assert result.stdout == "".join(f"{i}\n" for i in range(1, 200001))
            assert result.seqs == list(range(1, len(result.seqs) + 1))
            assert result.dropped == 0
            methods = [event["method"] for event in result.events]
            assert methods[-1] == "process.completed"
            assert methods.count("process.completed") == 1
            completed = result.completed
            assert set(completed) >= {
                "execution_id",
                "status",
                "exit_code",
                "signal",
                "duration_s",
                "stdout_bytes",
                "stderr_bytes",
                "dropped",
            }

    run(main())


def test_process_started_follows_the_response(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with websockets.connect(server.url) as ws:
            await ws.recv()
            await ws.send(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "execute",
                        "params": {"argv": ["echo", "x"], "env": marker},
                    }
                ).decode()
            )
            response = orjson.loads(await ws.recv())
            started = orjson.loads(await ws.recv())
            assert response["result"]["status"] == "started"
            assert started["method"] == "process.started"
            assert started["params"]["pid"] == response["result"]["pid"]
            assert (
                started["params"]["pgid"] == response["result"]["pgid"] == response["result"]["pid"]
            )
            while orjson.loads(await ws.recv())["method"] != "process.completed":
                pass

    run(main())


def test_exit_code_and_signal(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            failed = await client.run(argv=["sh", "-c", "exit 7"], env=marker)
            assert (failed.status, failed.exit_code, failed.signal) == ("failed", 7, None)
            killed = await client.run(argv=["sh", "-c", "kill -9 $$"], env=marker)
            assert (killed.status, killed.exit_code, killed.signal) == ("failed", None, 9)

    run(main())


def test_command_is_split_not_shelled(
    server: RunningServer, marker: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "pwned"

    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            result = await client.run(f"echo hi; touch {target}", env=marker)
            assert result.stdout == f"hi; touch {target}\n"
            result = await client.run(
                f"echo $(touch {target}) `touch {target}` && touch {target}", env=marker
            )
            assert "touch" in result.stdout
            result = await client.run("echo 'a  b' \"c d\"", env=marker)
            assert result.stdout == "a  b c d\n"
            with pytest.raises(NotAllowed, match="shell is disabled"):
                await client.execute(f"touch {target}", shell=True, env=marker)
            with pytest.raises(InvalidParams, match="cannot split"):
                await client.execute("echo 'unbalanced", env=marker)

    run(main())
    assert not target.exists()


def test_cwd_and_env(server: RunningServer, marker: dict[str, str], tmp_path: Path) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            result = await client.run(argv=["pwd"], cwd=str(tmp_path), env=marker)
            assert result.stdout == f"{tmp_path}\n"
            result = await client.run(
                argv=["sh", "-c", "echo $FOO:$CC_EXECUTOR_EXECUTION_ID"],
                env={**marker, "FOO": "bar"},
            )
            foo, execution_id = result.stdout.strip().split(":")
            assert foo == "bar" and execution_id == result.execution_id
            with pytest.raises(InvalidParams, match="not an existing directory"):
                await client.execute(argv=["pwd"], cwd=str(tmp_path / "nope"))
            with pytest.raises(InvalidParams, match="absolute"):
                await client.execute(argv=["pwd"], cwd="relative/dir")

    run(main())


def test_server_environment_is_not_inherited(make_server: Any, marker: dict[str, str]) -> None:
    os.environ["CCX_SECRET_SHOULD_NOT_LEAK"] = "1"
    try:
        running = make_server()
    finally:
        del os.environ["CCX_SECRET_SHOULD_NOT_LEAK"]

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            result = await client.run(argv=["env"], env=marker)
            assert "CCX_SECRET_SHOULD_NOT_LEAK" not in result.stdout
            assert "PATH=" in result.stdout

    run(main())


def test_bad_executable_and_params(server: RunningServer) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            with pytest.raises(InvalidParams, match="cannot execute"):
                await client.execute(argv=["/nonexistent/program"])
            with pytest.raises(InvalidParams, match="exactly one of command or argv"):
                await client.call("execute", {})
            with pytest.raises(InvalidParams, match="timout"):
                await client.call("execute", {"command": "true", "timout": 3})
            with pytest.raises(InvalidParams, match="timeout"):
                await client.call("execute", {"command": "true", "timeout": -1})
            with pytest.raises(InvalidParams, match="maximum"):
                await client.call("execute", {"command": "true", "timeout": 10**9})
            with pytest.raises(InvalidParams):
                await client.call("execute", {"argv": []})
            # The connection is still usable after every error.
            result = await client.run(argv=["true"])
            assert result.status == "completed"

    run(main())


def test_non_utf8_output_is_replaced_not_fatal(
    server: RunningServer, marker: dict[str, str]
) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            code = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n' + 'é€\\n'.encode())"
            result = await client.run(argv=[PY, "-c", code], env=marker)
            assert result.stdout == "ok \ufffd\ufffd end\né€\n"
            assert result.completed["stdout_bytes"] == 16

    run(main())


def test_twenty_megabyte_line_is_truncated(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url, max_frame_bytes=None) as client:
            code = "import sys; w=sys.stdout.write; w('before\\n'); w('x' * (20 * 1024 * 1024) + '\\n'); w('after\\n')"
            execution = await client.execute(argv=[PY, "-c", code], env=marker)
            result = await execution.wait(60)
            outputs = [e["params"] for e in result.events if e["method"] == "process.output"]
            truncated = [p for p in outputs if p.get("truncated")]
            assert len(truncated) == 1
            assert truncated[0]["data"] == "x" * (1024 * 1024) + "\n"
            assert result.stdout.startswith("before\n") and result.stdout.endswith("after\n")
            assert result.completed["stdout_bytes"] == 20 * 1024 * 1024 + 14

    run(main())


def test_stdin_input(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["cat"], stdin=True, env=marker)
            assert await execution.send_input("hello\n") == 6
            assert await execution.send_input("wörld\n", eof=True) == 7
            result = await execution.wait(10)
            assert result.stdout == "hello\nwörld\n"
            with pytest.raises(InvalidState):
                await execution.send_input("late")
            no_stdin = await client.execute(argv=["sleep", "5"], env=marker)
            with pytest.raises(InvalidState, match="stdin"):
                await no_stdin.send_input("x")
            await no_stdin.cancel()
            await no_stdin.wait(10)

    run(main())


def test_status_one_and_all(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            execution = await client.execute(argv=["sleep", "30"], env=marker)
            state = await execution.status()
            assert state["state"] == "running" and state["pid"] == execution.pid
            done = await client.run(argv=["true"], env=marker)
            listing = await client.call("status")
            states = {e["execution_id"]: e["state"] for e in listing["executions"]}
            assert states == {execution.id: "running", done.execution_id: "completed"}
            with pytest.raises(NotFound):
                await client.call("status", {"execution_id": "nope"})
            await execution.cancel()
            await execution.wait(10)

    run(main())


def test_limits_per_connection(make_server: Any, marker: dict[str, str]) -> None:
    running = make_server({"max_executions_per_connection": 2})

    async def main() -> None:
        async with ExecutorClient(running.url) as client, ExecutorClient(running.url) as other:
            first = await client.execute(argv=["sleep", "30"], env=marker)
            second = await client.execute(argv=["sleep", "30"], env=marker)
            with pytest.raises(LimitReached) as caught:
                await client.execute(argv=["sleep", "30"], env=marker)
            assert caught.value.code == LIMIT_REACHED
            third = await other.execute(argv=["true"], env=marker)  # another connection may
            await third.wait(10)
            for execution in (first, second):
                await execution.cancel()
                await execution.wait(10)
            (await client.execute(argv=["true"], env=marker))  # room again

    run(main())


def test_allow_list(make_server: Any, marker: dict[str, str], tmp_path: Path) -> None:
    running = make_server({"allowed_commands": ["echo", "/bin/true"], "allow_shell": True})
    lookalike = tmp_path / "echo"
    lookalike.write_text("#!/bin/sh\ntouch pwned\n")
    lookalike.chmod(0o755)

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            assert (await client.run(argv=["echo", "ok"], env=marker)).stdout == "ok\n"
            assert (await client.run(argv=["/bin/true"], env=marker)).status == "completed"
            for argv in (["ls"], [str(lookalike)], ["sh", "-c", "echo"], ["true"]):
                with pytest.raises(NotAllowed) as caught:
                    await client.execute(argv=argv, env=marker)
                assert caught.value.code == NOT_ALLOWED
            # The name is looked up on the server's PATH, never on the client's.
            hijack = {**marker, "PATH": str(tmp_path)}
            assert (await client.run(argv=["echo", "real"], env=hijack)).stdout == "real\n"
            with pytest.raises(NotAllowed, match="allow-list"):
                await client.execute("echo hi", shell=True)
            with pytest.raises(NotAllowed, match="LD_PRELOAD"):
                await client.execute(argv=["echo"], env={"LD_PRELOAD": "/tmp/x.so"})

    run(main())
    assert not (tmp_path / "pwned").exists()


def test_shell_when_allowed(make_server: Any, marker: dict[str, str]) -> None:
    running = make_server({"allow_shell": True})

    async def main() -> None:
        async with ExecutorClient(running.url) as client:
            result = await client.run("echo a | tr a b", shell=True, env=marker)
            assert result.stdout == "b\n"

    run(main())


def test_wire_errors_keep_the_connection(server: RunningServer) -> None:
    async def main() -> None:
        async with websockets.connect(server.url) as ws:
            await ws.recv()

            async def roundtrip(frame: str | bytes) -> Any:
                await ws.send(frame)
                return orjson.loads(await ws.recv())

            assert (await roundtrip("{oops"))["error"]["code"] == PARSE_ERROR
            assert (await roundtrip('{"jsonrpc": "2.0", "id": 1}'))["error"][
                "code"
            ] == INVALID_REQUEST
            response = await roundtrip('{"jsonrpc": "2.0", "id": 2, "method": "nope"}')
            assert response["error"]["code"] == METHOD_NOT_FOUND and response["id"] == 2
            response = await roundtrip(
                '{"jsonrpc": "2.0", "id": 3, "method": "control", "params": {"type": "JUMP"}}'
            )
            assert response["error"]["code"] == INVALID_PARAMS
            response = await roundtrip(
                '{"jsonrpc": "2.0", "id": 4, "method": "control", "params": {"type": "pause", "execution_id": "x"}}'
            )
            assert response["error"]["code"] == NOT_FOUND
            assert (await roundtrip(b"\x00\x01binary"))["error"]["code"] == INVALID_REQUEST
            batch = await roundtrip(
                '[{"jsonrpc": "2.0", "id": 5, "method": "status"}, 1,'
                ' {"jsonrpc": "2.0", "method": "status"}]'
            )
            assert [item["id"] for item in batch] == [5, None]
            assert "result" in batch[0] and batch[1]["error"]["code"] == INVALID_REQUEST
            # A batch of notifications only gets no response: the next reply is for id 6.
            await ws.send('[{"jsonrpc": "2.0", "method": "status"}]')
            assert (await roundtrip('{"jsonrpc": "2.0", "id": 6, "method": "status"}'))["id"] == 6

    run(main())


def test_rate_limit(make_server: Any) -> None:
    running = make_server({"rate_limit_per_s": 1, "rate_limit_burst": 5})

    async def main() -> None:
        async with websockets.connect(running.url) as ws:
            await ws.recv()
            batch = [{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(8)]
            await ws.send(orjson.dumps(batch).decode())
            codes = [item.get("error", {}).get("code") for item in orjson.loads(await ws.recv())]
            assert codes[:5] == [None] * 5
            assert codes[5:] == [RATE_LIMITED] * 3

    run(main())


def test_control_errors(server: RunningServer, marker: dict[str, str]) -> None:
    async def main() -> None:
        async with ExecutorClient(server.url) as client:
            with pytest.raises(NotFound):
                await client.call("control", {"type": "PAUSE"})
            first = await client.execute(argv=["sleep", "30"], env=marker)
            with pytest.raises(InvalidState) as caught:
                await client.call("control", {"type": "resume"})  # the only live one: running
            assert caught.value.code == INVALID_STATE
            second = await client.execute(argv=["sleep", "30"], env=marker)
            with pytest.raises(InvalidParams, match="give execution_id"):
                await client.call("control", {"type": "CANCEL"})
            for execution in (first, second):
                assert (await execution.cancel())["status"] == "cancelled"
                await execution.wait(10)
            with pytest.raises(InvalidState):
                await first.cancel()
            with pytest.raises(InvalidState):
                await first.pause()

    run(main())
