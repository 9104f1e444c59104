"""The client's pure parts: URL forms, environment defaults, exit statuses,
the ps table, stream-json reading and the MCP tails."""

from __future__ import annotations

import asyncio
import io
import signal

import pytest

from service.client import DEFAULT_URL, ConnectionLost, ExecutorClient, resolve_url
from service.client.commands.control import format_age, print_table
from service.client.commands.terminal import _utf8_boundary, exit_status
from service.server.mcp_relay import ProgressRelay, Tail
from service.stream_json import EventLines, assistant_text, result_summary, tool_calls
from tests.utils import RunningServer


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://h:1/ws/mcp", "ws://h:1/ws/mcp"),
        ("ws://h:1/ws", "ws://h:1/ws"),
        ("http://h:1", "ws://h:1/ws/mcp"),
        ("https://h:1/", "wss://h:1/ws/mcp"),
        ("h:8003", "ws://h:8003/ws/mcp"),
        ("  WSS://h/ws/mcp?token=x ", "wss://h/ws/mcp?token=x"),
    ],
)
def test_resolve_url(given: str, expected: str) -> None:
    assert resolve_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://h/x", "ws://", "http:///ws"])
def test_resolve_url_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        resolve_url(bad)


def test_from_env() -> None:
    client = ExecutorClient.from_env(environ={})
    assert (client.url, client.token) == (DEFAULT_URL, None)
    env = {"CC_EXECUTOR_URL": "http://e:9", "CC_EXECUTOR_TOKEN": "t"}
    client = ExecutorClient.from_env(environ=env)
    assert (client.url, client.token) == ("ws://e:9/ws/mcp", "t")
    client = ExecutorClient.from_env("a:1", "u", environ=env)
    assert (client.url, client.token) == ("ws://a:1/ws/mcp", "u")


def test_events_after_close_end_instead_of_hanging(server: RunningServer) -> None:
    async def main() -> None:
        client = ExecutorClient(server.url)
        await client.connect()
        await client.close()
        execution_ids = ["never-seen"]
        from service.client import RemoteExecution

        execution = RemoteExecution(client, execution_ids[0], {})
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(execution.wait(), 2)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("completed", "status"),
    [
        ({"status": "completed", "exit_code": 0, "signal": None}, 0),
        ({"status": "failed", "exit_code": 3, "signal": None}, 3),
        ({"status": "failed", "exit_code": None, "signal": 9}, 137),
        ({"status": "cancelled", "exit_code": None, "signal": signal.SIGTERM}, 143),
        ({"status": "cancelled", "exit_code": 0, "signal": None}, 0),
        ({"status": "timed_out", "exit_code": None, "signal": 15}, 124),
        ({"status": "failed"}, 1),
    ],
)
def test_exit_status(completed: dict[str, object], status: int) -> None:
    assert exit_status(completed) == status


def test_utf8_boundary() -> None:
    text = "aé€😀".encode()
    assert _utf8_boundary(text) == len(text)
    assert _utf8_boundary(text[:-1]) == len(text) - 4
    assert _utf8_boundary(text[:-3]) == len(text) - 4
    assert _utf8_boundary("é".encode()[:1]) == 0
    assert _utf8_boundary(b"") == 0


def test_ps_table() -> None:
    out = io.StringIO()
    records = [
        {
            "execution_id": "abc",
            "state": "running",
            "started_at": 100.0,
            "pid": 42,
            "command": "sleep 5",
        },
        {"execution_id": "d", "state": "failed", "created_at": 0.0, "argv": ["a b", "c"]},
    ]
    print_table(records, out, now=190.0)
    assert out.getvalue().splitlines() == [
        "ID   STATE    AGE    PID  COMMAND",
        "abc  running  1m30s  42   sleep 5",
        "d    failed   3m10s  -    'a b' c",
    ]
    assert [format_age(s) for s in (5, 3700, 90000)] == ["5s", "1h01m", "1d01h"]


def test_event_lines_and_text() -> None:
    lines = EventLines(max_line_bytes=100)
    assistant = (
        '{"type":"assistant","message":{"content":[{"type":"text","text":"Hi"},'
        '{"type":"tool_use","name":"Bash"}]}}'
    )
    events = lines.feed(assistant[:20])
    assert events == []
    events = lines.feed(assistant[20:] + "\nnot json\n" + "x" * 150)
    assert [assistant_text(e) for e in events] == ["Hi"]
    assert tool_calls(events[0]) == ["Bash"]
    assert lines.feed('x{"type":"x"}\n') == []  # the over-long line was dropped whole
    assert lines.skipped_lines == 2
    assert lines.feed('{"type":"result","is_error":false,"num_turns":2}') == []
    (result,) = lines.finish()
    summary = result_summary({**result, "duration_ms": 5, "total_cost_usd": 0.5, "session_id": "s"})
    assert summary == "done, 2 turns, 5 ms, $0.5000, session s"


def test_tail_keeps_the_end() -> None:
    tail = Tail(40)
    for part in ("abcdefghij" * 3, "klmnopqrst" * 2):
        tail.add(part)
    assert tail.text() == "abcdefghij" * 2 + "klmnopqrst" * 2
    assert tail.total == 50
    # The note counts toward the limit: 34 bytes of note, 6 of text.
    assert tail.take() == "[... 44 characters not shown ...]\nopqrst"
    assert tail.take() == ""


class RecordingContext:
    """Stands in for the SDK's request context: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str | None]] = []

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        self.sent.append((progress, message))


def test_progress_relay_paces_and_heartbeats() -> None:
    async def main() -> None:
        ctx = RecordingContext()
        relay = ProgressRelay(ctx, interval_s=0.1, heartbeat_s=0.3, message_chars=40)  # type: ignore[arg-type]
        relay.add("a\n")
        await relay.pump()
        assert ctx.sent == [], "not before interval_s"
        await asyncio.sleep(relay.wait_s())
        relay.add("b\n")
        await relay.pump()
        assert ctx.sent == [(1.0, "a\nb\n")]
        assert 0.25 < relay.wait_s() <= 0.3, "silence: next is a heartbeat"
        await asyncio.sleep(relay.wait_s())
        await relay.pump()
        assert ctx.sent[-1] == (2.0, None)
        relay.add("0123456789" * 5)
        await relay.pump(final=True)
        assert ctx.sent[-1] == (3.0, "[... 44 characters not shown ...]\n456789")
        await relay.pump(final=True)
        assert len(ctx.sent) == 3, "nothing buffered: no final message"

    asyncio.run(main())
