"""The stress harness's cluster parts on plain values: several hosts in
``--host``, a PID per host, the RSS gate over several nodes, the gate on
``control (other node)``, the node each user talks to, and ClusterUser's
check of an attached stream."""

from __future__ import annotations

from typing import Any

import pytest

from stress.attached import Stream
from stress.gates import Bounds, NameStats, RunFigures, evaluate
from stress.nodes import next_node
from stress.rss import RssSampler, peak_of
from stress.settings import hosts, server_pids

MB = 1_000_000


def test_host_field_takes_several_servers_in_order() -> None:
    assert hosts("ws://a:1/ws/mcp, b:2 ,http://c:3") == (
        "ws://a:1/ws/mcp",
        "ws://b:2/ws/mcp",
        "ws://c:3/ws/mcp",
    )
    assert hosts("ws://a:1/ws/mcp") == ("ws://a:1/ws/mcp",)
    for empty in ("", " , ", None):
        with pytest.raises(ValueError, match="no --host"):
            hosts(empty)


def test_server_pid_takes_one_per_host() -> None:
    assert server_pids("0") == (0,)
    assert server_pids("12,34") == (12, 34)
    assert server_pids("") == (0,)
    for bad in ("12,x", "-3"):
        with pytest.raises(ValueError, match="--server-pid"):
            server_pids(bad)


def test_users_of_a_class_take_the_nodes_in_turn() -> None:
    first = [next_node("TurnTestUser") for _ in range(4)]
    assert [n % 2 for n in first] == [0, 1, 0, 1]
    assert next_node("OtherTurnTestUser", offset=1) == 1  # a worker's own start


def sampler(peak: int | None) -> RssSampler:
    made = RssSampler(0, "http://127.0.0.1:1", 1.0)
    made.peak_bytes = peak
    return made


def test_rss_gate_takes_the_largest_node_and_fails_an_unseen_one() -> None:
    assert peak_of([sampler(50 * MB), sampler(70 * MB)]) == 70 * MB
    assert peak_of([sampler(50 * MB), sampler(None)]) is None
    assert peak_of([]) is None


def test_remote_control_is_gated_on_its_own() -> None:
    stats = [
        NameStats("control", 10, 0, 5, 40, 50),
        NameStats("control (other node)", 10, 0, 9, 2500, 2600),
    ]
    failed = [g.name for g in evaluate(RunFigures(stats, 60 * MB), Bounds()) if not g.passed]
    assert failed == ["control (other node) p95"]


def chunk(seq: int, data: str) -> dict[str, Any]:
    return {"method": "process.output", "params": {"seq": seq, "data": data}}


def test_attached_stream_must_start_at_one_with_no_gap_or_duplicate() -> None:
    good = Stream()
    for seq in (1, 2, 3):
        good.take(chunk(seq, f"tick {seq}\n"))
    assert good.problem() is None and good.last_seq == 3

    gap = Stream()
    for seq in (1, 3):
        gap.take(chunk(seq, f"tick {seq}\n"))
    assert gap.problem() == "seq 3 where 2 was due (of 2)"

    duplicate = Stream()
    duplicate.take(chunk(1, "tick 1\n"))
    duplicate.take(chunk(2, "tick 1\n"))
    assert duplicate.problem() == "line 2 is 'tick 1', not 'tick 2'"

    cancelled = Stream()  # a shell told of its child's SIGTERM, on stderr
    cancelled.take(chunk(1, "tick 1\n"))
    cancelled.take(
        {"method": "process.output", "params": {"seq": 2, "type": "stderr", "data": "Terminated\n"}}
    )
    assert cancelled.problem() is None and cancelled.last_seq == 2

    done = Stream()
    done.take({"method": "process.completed", "params": {"status": "cancelled"}})
    assert done.completed == {"status": "cancelled"} and done.problem() is None
