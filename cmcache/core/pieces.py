"""Which bytes of a download in progress are finished, from aria2's piece bitfield.

aria2's ``tellStatus`` ``bitfield`` is hex, one bit per piece of ``pieceLength`` bytes, the
high bit of the first byte being piece 0; a set bit means the piece is written in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

GONE, CHECKING = -1, -2  # Growing.ready_until: no longer served; last byte in, being checked


@dataclass(frozen=True)
class Pieces:
    """A download's finished pieces as aria2 reported them."""

    bitfield: bytes
    piece_length: int
    total: int

    @classmethod
    def parse(cls, bitfield_hex: str, piece_length: int, total: int) -> Pieces | None:
        """None when aria2's answer does not describe ``total`` bytes (not yet known, or odd)."""
        try:
            bits = bytes.fromhex(bitfield_hex)
        except ValueError:
            return None
        if piece_length <= 0 or total <= 0 or len(bits) * 8 < -(-total // piece_length):
            return None
        return cls(bits, piece_length, total)

    def has(self, piece: int) -> bool:
        """Whether piece ``piece`` is finished."""
        return bool(self.bitfield[piece >> 3] & (0x80 >> (piece & 7)))

    def ready_until(self, offset: int) -> int:
        """The end (exclusive) of the finished bytes that start at ``offset``; ``offset``
        itself when its piece is not finished."""
        if not 0 <= offset < self.total:
            return offset
        count = -(-self.total // self.piece_length)
        piece = offset // self.piece_length
        while piece < count and self.has(piece):
            piece += 1
        return max(offset, min(self.total, piece * self.piece_length))


@dataclass(frozen=True)
class Growing:
    """A download in progress that this node serves while it arrives.

    ``ready_until(offset)`` (blocking: it asks aria2) is the end of the finished bytes from
    ``offset`` on, ``offset`` when its piece is not there yet, ``GONE`` when the download
    failed or was dropped, ``CHECKING`` once the last byte is in and the whole-file check
    runs: every byte may go then, from the staging file until the checked file is placed.
    """

    path: Path
    size: int
    ready_until: Callable[[int], int]
