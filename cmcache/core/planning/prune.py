"""The prune plan: least recently used first, protected files kept. Pure: plain data in and out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

DAY = 86400.0


@dataclass(frozen=True)
class Candidate:
    """A managed file as the planner sees it."""

    folder: str
    filename: str
    size: int
    last_used: float
    pinned: bool = False
    in_flight: bool = False
    inode: int = 0  # 0: not known (counted on its own)
    links: tuple[Candidate, ...] = ()  # other managed names of the same bytes (hard links)

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"

    @property
    def names(self) -> tuple[Candidate, ...]:
        """This name and its hard links: removing all of them frees the bytes."""
        return (self, *self.links)


def merge_links(files: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per inode: hard links share their bytes, so they are counted, kept and
    evicted together. The merged candidate was last used when any of its names was, and is
    protected when any of them is."""
    groups: dict[tuple[int, int] | str, list[Candidate]] = {}
    for c in files:
        groups.setdefault((c.inode, c.size) if c.inode else c.ref, []).append(c)
    merged = []
    for names in groups.values():
        first, *rest = names
        if rest:
            first = replace(
                first,
                last_used=max(c.last_used for c in names),
                pinned=any(c.pinned for c in names),
                in_flight=any(c.in_flight for c in names),
                links=tuple(rest),
            )
        merged.append(first)
    return merged


@dataclass(frozen=True)
class PrunePlan:
    """What to remove, in order, and where that leaves the cache."""

    remove: tuple[Candidate, ...]
    managed_size: int
    resulting_size: int
    reached: bool
    protected: int  # files kept by pins, recent use or downloads in flight

    @property
    def freed(self) -> int:
        """Bytes the plan frees."""
        return self.managed_size - self.resulting_size


def lru_key(c: Candidate) -> tuple[float, int, str]:
    """Eviction order: least recently used first; ties: larger first, then by name."""
    return (c.last_used, -c.size, c.ref)


def protected(c: Candidate, now: float, keep_days: float) -> bool:
    """Pinned, in flight, or used within ``keep_days``."""
    return c.pinned or c.in_flight or (now - c.last_used) < keep_days * DAY


def plan_prune(
    candidates: Iterable[Candidate],
    *,
    now: float,
    keep_days: float,
    max_size: int | None = None,
    min_free: int | None = None,
    free_bytes: int = 0,
) -> PrunePlan:
    """Evict unprotected files, least recently used first (ties: larger first, then by name).

    With ``max_size`` and/or ``min_free``, stop as soon as both targets are met; with neither,
    evict every unprotected file.
    """
    files = list(candidates)
    total = sum(c.size for c in files)
    evictable = sorted(
        (c for c in files if not protected(c, now, keep_days)),
        key=lru_key,
    )
    keep_count = len(files) - len(evictable)
    everything = max_size is None and min_free is None

    def satisfied(size: int, free: int) -> bool:
        if everything:
            return False
        return (max_size is None or size <= max_size) and (min_free is None or free >= min_free)

    removed: list[Candidate] = []
    size, free = total, free_bytes
    for candidate in evictable:
        if satisfied(size, free):
            break
        removed.append(candidate)
        size -= candidate.size
        free += candidate.size
    reached = everything or satisfied(size, free)
    return PrunePlan(tuple(removed), total, size, reached, keep_count)
