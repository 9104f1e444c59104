"""Cutting pipe reads into whole lines with bounded memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.lines import LineSplitter, Piece, cut_at_char_boundary


def split_all(data: bytes, cuts: list[int], max_line: int) -> list[Piece]:
    splitter = LineSplitter(max_line)
    pieces: list[Piece] = []
    start = 0
    for cut in sorted(set(cuts)):
        pieces += splitter.feed(data[start:cut])
        start = cut
    pieces += splitter.feed(data[start:])
    pieces += splitter.finish()
    return pieces


def expected_lines(data: bytes, max_line: int) -> list[tuple[bytes, bool]]:
    """What the splitter must produce, line by line, computed the slow way."""
    out = []
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        if last and not line:
            break
        if len(line) > max_line:
            out.append((cut_at_char_boundary(line, max_line) + b"\n", True))
        else:
            out.append((line if last else line + b"\n", False))
    return out


def as_lines(pieces: list[Piece]) -> list[tuple[bytes, bool]]:
    out = []
    for piece in pieces:
        if piece.truncated:
            out.append((piece.data, True))
        else:
            out += [(line, False) for line in piece.data.splitlines(keepends=True)]
    return out


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"a", b"bb", b"\n", "é".encode(), "€".encode(), b"\xff", b"x" * 9]),
        max_size=80,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    max_line=st.integers(min_value=4, max_value=40),
)
def test_any_reads_give_the_lines(data: bytes, cuts: list[int], max_line: int) -> None:
    pieces = split_all(data, cuts, max_line)
    assert as_lines(pieces) == expected_lines(data, max_line)
    for piece in pieces:
        # Every piece but the stream's last ends with a newline.
        assert piece.data.endswith(b"\n") or piece is pieces[-1]


def test_fast_path_returns_one_block_per_read() -> None:
    splitter = LineSplitter(1024)
    data = b"".join(b"%d\n" % i for i in range(1000))
    assert splitter.feed(data) == [Piece(data)]


def test_partial_line_joins_next_read() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == [Piece(b"hello\n")]
    assert splitter.finish() == [Piece(b"wor")]


def test_long_line_is_cut_once_and_rest_skipped() -> None:
    splitter = LineSplitter(10)
    pieces = splitter.feed(b"x" * 25)
    pieces += splitter.feed(b"y" * 1000)
    pieces += splitter.feed(b"zz\nnext\n")
    assert pieces == [Piece(b"x" * 10 + b"\n", True), Piece(b"next\n")]
    assert splitter.truncated_lines == 1


def test_memory_stays_bounded_for_an_endless_line() -> None:
    splitter = LineSplitter(1000)
    for _ in range(200):
        splitter.feed(b"y" * 65536)
        assert len(splitter._partial) <= 2 * 1000 + 1


def test_cut_never_splits_a_character() -> None:
    text = "€" * 10  # 3 bytes each
    for limit in range(1, 30):
        cut = cut_at_char_boundary(text.encode(), limit)
        assert len(cut) <= limit
        cut.decode("utf-8")  # raises if a character was split
