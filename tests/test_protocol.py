"""The JSON-RPC layer without a socket."""

from __future__ import annotations

import orjson
import pytest

from service.errors import INVALID_REQUEST, PARSE_ERROR
from service.protocol import Request, parse_frame, parse_message


def error_code(item: object) -> int:
    assert isinstance(item, dict), item
    return int(item["error"]["code"])


def test_request_and_notification() -> None:
    parsed = parse_frame('{"jsonrpc": "2.0", "id": 7, "method": "status", "params": {}}')
    assert parsed.batch is False
    assert parsed.items == [Request("status", {}, 7, False)]
    parsed = parse_frame('{"jsonrpc": "2.0", "method": "status"}')
    assert parsed.items == [Request("status", None, None, True)]


def test_explicit_null_id_is_a_request_not_a_notification() -> None:
    (item,) = parse_frame('{"jsonrpc": "2.0", "id": null, "method": "status"}').items
    assert isinstance(item, Request) and not item.is_notification


@pytest.mark.parametrize("frame", ["{", "not json", '{"a": 1,}', "\ud800", "[" * 5000])
def test_parse_error_has_null_id(frame: str) -> None:
    (item,) = parse_frame(frame).items
    assert error_code(item) == PARSE_ERROR
    assert isinstance(item, dict) and item["id"] is None


@pytest.mark.parametrize(
    "message",
    [
        1,
        "x",
        None,
        {"jsonrpc": "1.0", "id": 1, "method": "x"},
        {"id": 1, "method": "x"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1, "method": ""},
        {"jsonrpc": "2.0", "id": [1], "method": "x"},
        {"jsonrpc": "2.0", "id": True, "method": "x"},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": 3},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "extra": 3},
    ],
)
def test_invalid_requests(message: object) -> None:
    assert error_code(parse_message(message)) == INVALID_REQUEST


def test_invalid_request_keeps_a_valid_id() -> None:
    item = parse_message({"jsonrpc": "1.0", "id": "abc", "method": "x"})
    assert isinstance(item, dict) and item["id"] == "abc"


def test_batch_keeps_order_and_mixes_errors() -> None:
    frame = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "a"},
            7,
            {"jsonrpc": "2.0", "method": "b"},
        ]
    )
    parsed = parse_frame(frame)
    assert parsed.batch is True
    first, second, third = parsed.items
    assert isinstance(first, Request) and first.method == "a"
    assert error_code(second) == INVALID_REQUEST
    assert isinstance(third, Request) and third.is_notification


def test_empty_batch_is_one_invalid_request() -> None:
    parsed = parse_frame("[]")
    assert parsed.batch is False
    assert [error_code(item) for item in parsed.items] == [INVALID_REQUEST]
