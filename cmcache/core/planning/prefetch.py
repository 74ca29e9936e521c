"""The prefetch plan: fit wanted models into the budget by evicting LRU files. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.core.planning.prune import Candidate, lru_key, protected

if TYPE_CHECKING:
    from cmcache.core.targets import Target


@dataclass(frozen=True)
class Wanted:
    """A model prefetch should make present, and how big it is thought to be."""

    target: Target
    size: int | None


@dataclass(frozen=True)
class PrefetchPlan:
    """Downloads to run, files to evict first, and what does not fit."""

    fetch: tuple[Wanted, ...]
    evict: tuple[Candidate, ...]
    skipped: tuple[tuple[Wanted, str], ...] = field(default=())


def plan_prefetch(
    missing: list[Wanted],
    cached: list[Candidate],
    *,
    now: float,
    keep_days: float,
    max_size: int | None,
    never_evict: set[str],
) -> PrefetchPlan:
    """Fit ``missing`` into ``max_size`` by evicting LRU unprotected files; skip what won't fit.

    Files named in ``never_evict`` (prefetch-listed or wanted now), pinned, recently used or in
    flight are never evicted. A download of unknown size is let through when under budget now.
    """
    if max_size is None:
        return PrefetchPlan(tuple(missing), ())
    used = sum(c.size for c in cached)
    evictable = sorted(
        (c for c in cached if not protected(c, now, keep_days) and c.ref not in never_evict),
        key=lru_key,
    )
    fetch: list[Wanted] = []
    evict: list[Candidate] = []
    skipped: list[tuple[Wanted, str]] = []
    for want in missing:
        need = want.size or 0
        if want.size is None and used >= max_size:
            skipped.append((want, "its size is unknown and the cache is at its budget"))
            continue
        room = max_size - used
        extra: list[Candidate] = []
        while need > room and evictable:
            victim = evictable.pop(0)
            extra.append(victim)
            room += victim.size
        if need > room:
            evictable = extra + evictable  # put them back: this one does not fit anyway
            evictable.sort(key=lru_key)
            skipped.append((want, f"needs {need} bytes; only {room} can be freed under max_size"))
            continue
        evict.extend(extra)
        used += need - sum(c.size for c in extra)
        fetch.append(want)
    return PrefetchPlan(tuple(fetch), tuple(evict), tuple(skipped))
