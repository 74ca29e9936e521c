"""How many segments to fetch a file in."""

from __future__ import annotations

MiB = 1 << 20
SEGMENT = 16 * MiB  # below this a new connection costs more than it brings
MAX_SEGMENTS = 16  # aria2's limit per server
UNKNOWN_SIZE_SEGMENTS = 8


def auto_split(size: int | None) -> int:
    """One segment per 16 MiB, from 1 up to 16 (8 when the size is unknown)."""
    if size is None:
        return UNKNOWN_SIZE_SEGMENTS
    return max(1, min(MAX_SEGMENTS, -(-size // SEGMENT)))


def resume_split(split: int, unfinished_runs: int) -> int:
    """Segments for a resumed download: no more than the stretches still missing.

    More connections than stretches make aria2 cut running segments in two; the bytes the
    cut connection has in flight past the cut are then fetched twice.
    """
    return max(1, min(split, unfinished_runs))
