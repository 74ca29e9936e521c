"""aria2's control file (``<file>.aria2``): which pieces of a partial download are on disk.

The format (aria2's manual, "Control File (*.aria2) Format"), version 1, big-endian: version
(2), extension (4), info-hash length (4) and info hash, piece length (4), total length (8),
upload length (8), bitfield length (4) and bitfield (a set bit: the piece is done), then the
in-flight pieces: their count (4), each index (4), length (4), block bitfield length (4) and
block bitfield (16 KiB blocks). Anything that does not parse is None: the caller then gives
aria2 no hints and lets it decide, as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

BLOCK = 16 * 1024  # aria2's block inside a piece
MAX_PIECES = 1 << 24  # more pieces than any file this cache holds: a damaged file


@dataclass(frozen=True)
class Partial:
    """What a control file vouches for."""

    total: int
    piece_length: int
    done: tuple[bool, ...]  # per piece
    started: dict[int, int]  # in-flight piece → bytes done contiguously from its start

    @property
    def have(self) -> int:
        """Bytes on disk that aria2 will not fetch again."""
        full = sum(self._length(i) for i, ok in enumerate(self.done) if ok)
        return full + sum(n for i, n in self.started.items() if not self.done[i])

    @property
    def missing(self) -> int:
        """Bytes still to fetch."""
        return self.total - self.have

    @property
    def unfinished_runs(self) -> int:
        """How many separate stretches of the file are still missing: each is one segment to
        resume, starting where its done part ends (a piece begun, or one after a done piece)."""
        runs, after_done = 0, True
        for index, ok in enumerate(self.done):
            begun = self.started.get(index, 0) > 0
            if not ok and (after_done or begun):
                runs += 1
            after_done = ok
        return runs

    def _length(self, index: int) -> int:
        return min(self.piece_length, self.total - index * self.piece_length)


def read_partial(control: Path) -> Partial | None:
    """The state a control file records, or None when it is missing or does not parse."""
    try:
        data = control.read_bytes()
    except OSError:
        return None
    try:
        return _parse(data)
    except (struct.error, ValueError, IndexError):
        return None


def _parse(data: bytes) -> Partial | None:
    (version,) = struct.unpack_from(">H", data, 0)
    if version != 1:  # 0 is host byte order, written by aria2 before 1.x: not worth guessing
        return None
    (hash_length,) = struct.unpack_from(">I", data, 6)
    at = 10 + hash_length
    piece_length, total, _upload, bits_length = struct.unpack_from(">IQQI", data, at)
    at += 24
    if piece_length <= 0 or total <= 0:
        return None
    pieces = -(-total // piece_length)
    if pieces > MAX_PIECES or bits_length != -(-pieces // 8):
        return None
    bits = data[at : at + bits_length]
    at += bits_length
    done = tuple(bool(bits[i >> 3] & (0x80 >> (i & 7))) for i in range(pieces))
    (count,) = struct.unpack_from(">I", data, at)
    at += 4
    started: dict[int, int] = {}
    for _ in range(min(count, pieces)):
        index, length, block_bits_length = struct.unpack_from(">III", data, at)
        at += 12
        blocks = data[at : at + block_bits_length]
        at += block_bits_length
        if index >= pieces or len(blocks) != block_bits_length:
            return None
        started[index] = min(length, _leading_blocks(blocks, length) * BLOCK)
    return Partial(total, piece_length, done, started)


def _leading_blocks(bits: bytes, length: int) -> int:
    """Blocks done from a piece's start: aria2 resumes a piece after the first missing one."""
    count = -(-length // BLOCK)
    for i in range(count):
        if not bits[i >> 3] & (0x80 >> (i & 7)):
            return i
    return count
