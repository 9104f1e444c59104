"""Cutting a byte stream into whole lines, with bounded memory.

:class:`LineSplitter` is fed raw reads from a pipe and hands back blocks of
whole lines. It never holds more than ``max_line_bytes`` of an unfinished
line: a longer line is cut at a UTF-8 character boundary, flagged
``truncated``, and the rest of it is skipped up to its newline. Work per read
is a few ``find`` calls, not a Python loop per line, unless a read is larger
than ``max_line_bytes`` (then its lines are checked one by one).
"""

from __future__ import annotations

from dataclasses import dataclass

NEWLINE = b"\n"


@dataclass(frozen=True, slots=True)
class Piece:
    """Whole lines (each ending in a newline), or one cut line when ``truncated``.

    Only the very last piece of a stream, from :meth:`LineSplitter.finish`, may
    lack its final newline.
    """

    data: bytes
    truncated: bool = False


def cut_at_char_boundary(data: bytes, limit: int) -> bytes:
    """The longest prefix of ``data`` of at most ``limit`` bytes that does not
    split a UTF-8 character (continuation bytes are ``0b10xxxxxx``)."""
    if len(data) <= limit:
        return data
    end = limit
    # Back off over at most 3 continuation bytes to the start of the character.
    while end > 0 and limit - end < 4 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


class LineSplitter:
    """Stateful splitter for one stream; not thread-safe, one per pipe."""

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()
        self._skipping = False
        self.truncated_lines = 0

    def feed(self, data: bytes) -> list[Piece]:
        """Take one read; return the pieces it completed, in order."""
        pieces: list[Piece] = []
        start = 0
        if self._skipping:
            newline = data.find(NEWLINE)
            if newline < 0:
                return pieces
            self._skipping = False
            start = newline + 1

        last_newline = data.rfind(NEWLINE, start)
        if last_newline < 0:
            self._grow_partial(data, start, pieces)
            return pieces

        first_newline = data.find(NEWLINE, start)
        if self._partial or first_newline - start + 1 > self.max_line_bytes:
            # The first line continues the unfinished one from earlier reads.
            self._partial += data[start : first_newline + 1]
            self._emit_line(bytes(self._partial), pieces)
            self._partial.clear()
            start = first_newline + 1

        if start <= last_newline:
            block = data[start : last_newline + 1]
            if len(block) > self.max_line_bytes:
                self._emit_checked(block, pieces)
            else:
                pieces.append(Piece(block))

        self._grow_partial(data, last_newline + 1, pieces)
        return pieces

    def finish(self) -> list[Piece]:
        """End of stream: the unfinished last line, if any, without a newline."""
        pieces: list[Piece] = []
        if self._partial:
            pieces.append(Piece(bytes(self._partial)))
            self._partial.clear()
        self._skipping = False
        return pieces

    def _grow_partial(self, data: bytes, start: int, pieces: list[Piece]) -> None:
        if start >= len(data):
            return
        if len(self._partial) + len(data) - start > self.max_line_bytes:
            self._partial += data[start : start + self.max_line_bytes + 1]
            self._cut(bytes(self._partial), pieces)
            self._partial.clear()
            self._skipping = True
        else:
            self._partial += data[start:]

    def _emit_line(self, line: bytes, pieces: list[Piece]) -> None:
        """One whole line (with its newline) that may be too long."""
        if len(line) - 1 > self.max_line_bytes:
            self._cut(line, pieces)
        else:
            self._append(line, pieces)

    def _emit_checked(self, block: bytes, pieces: list[Piece]) -> None:
        """Whole lines, any of which may be too long: check them one by one."""
        pos = 0
        run_start = 0
        end = len(block)
        while pos < end:
            newline = block.find(NEWLINE, pos)
            if newline - pos > self.max_line_bytes:
                if run_start < pos:
                    self._append(block[run_start:pos], pieces)
                self._cut(block[pos : newline + 1], pieces)
                run_start = newline + 1
            pos = newline + 1
        if run_start < end:
            self._append(block[run_start:end], pieces)

    def _cut(self, line: bytes, pieces: list[Piece]) -> None:
        self.truncated_lines += 1
        pieces.append(Piece(cut_at_char_boundary(line, self.max_line_bytes) + NEWLINE, True))

    @staticmethod
    def _append(block: bytes, pieces: list[Piece]) -> None:
        if pieces and not pieces[-1].truncated:
            pieces[-1] = Piece(pieces[-1].data + block)
        else:
            pieces.append(Piece(block))
