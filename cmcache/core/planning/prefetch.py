"""The prefetch plan: fit wanted models into the budget by evicting files (least recently used
first, or by cost). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.core.planning.prune import Candidate, CostOrder, lru_key, protected

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cmcache.core.targets import Target


@dataclass(frozen=True)
class Wanted:
    """A model prefetch should make present, how big it is thought to be, why, and (for a
    predicted model) its chance of being needed soon."""

    target: Target
    size: int | None
    reason: str = ""
    chance: float | None = None


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
    chance: Mapping[str, float] | None = None,
    cost: CostOrder | None = None,
) -> PrefetchPlan:
    """Fit ``missing`` (in order) into ``max_size`` by evicting unprotected files; skip what
    won't fit.

    Files named in ``never_evict`` (prefetch-listed or wanted now), pinned, recently used or in
    flight are never evicted. A predicted model (one with a ``chance``) evicts only files less
    likely to be needed than itself (``chance`` of each file). Victims go least recently used
    first, or by ``cost``. A download of unknown size is let through when under budget now.
    """
    if max_size is None:
        return PrefetchPlan(tuple(missing), ())
    likely = chance or {}
    used = sum(c.size for c in cached)
    evictable = sorted(
        (c for c in cached if not protected(c, now, keep_days) and c.ref not in never_evict),
        key=lru_key if cost is None else cost.key,
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
        for victim in evictable:
            if need <= room:
                break
            if want.chance is not None and likely.get(victim.ref, 0.0) >= want.chance:
                continue
            extra.append(victim)
            room += victim.size
        if need > room:
            guard = " without evicting a model as likely to be needed" if want.chance else ""
            skipped.append(
                (want, f"needs {need} bytes; only {room} can be freed under max_size{guard}")
            )
            continue
        if cost is not None:
            extra = cost.spare(extra, _room_for(need, room))
        gone = {c.ref for c in extra}
        evictable = [c for c in evictable if c.ref not in gone]
        evict.extend(extra)
        used += need - sum(c.size for c in extra)
        fetch.append(want)
    return PrefetchPlan(tuple(fetch), tuple(evict), tuple(skipped))


def _room_for(need: int, room: int) -> Callable[[int], bool]:
    """Whether ``need`` bytes still fit in ``room`` if ``kept`` bytes of victims stay."""
    return lambda kept: room - kept >= need
