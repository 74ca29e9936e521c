"""The prune plan: least recently used first (or cheapest to bring back, with the "cost"
policy), protected files kept. Pure: plain data in and out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

DAY = 86400.0
# Bytes per second assumed for a source no download has been measured from yet.
DEFAULT_THROUGHPUT = 20 * 1024 * 1024
# The least chance of use a file is given: nothing predicts it, yet it may come back, and then
# the one cheaper to bring back should have gone first.
NEVER_SURE = 0.01


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


@dataclass(frozen=True)
class CostOrder:
    """Eviction by expected re-download time: size ÷ its source's throughput, times its
    chance of use.

    To free a given number of bytes at the least expected cost, files go in order of expected
    seconds *per byte freed* (chance ÷ throughput), cheapest first; at equal rates the smaller
    expected cost first, then least recently used. Victims a plan turns out not to need are
    then kept, dearest first (``spare``).
    """

    chance: Mapping[str, float]  # ref → predicted chance of use, 0-1 (at least NEVER_SURE)
    seconds_per_byte: Mapping[str, float] = field(default_factory=dict)  # ref → 1 / throughput
    default_seconds_per_byte: float = 1.0 / DEFAULT_THROUGHPUT

    def expected_seconds(self, c: Candidate) -> float:
        """Seconds of downloading that evicting ``c`` is expected to cost."""
        return self._rate(c) * c.size

    def key(self, c: Candidate) -> tuple[float, float, tuple[float, int, str]]:
        """Eviction order: cheapest expected seconds per byte freed first."""
        rate = self._rate(c)
        return (rate, rate * c.size, lru_key(c))

    def _rate(self, c: Candidate) -> float:
        spb = self.seconds_per_byte.get(c.ref, self.default_seconds_per_byte)
        chance = max(self.chance.get(name.ref, 0.0) for name in c.names)  # hard links: any
        return max(chance, NEVER_SURE) * spb

    def spare(
        self, victims: list[Candidate], still_enough: Callable[[int], bool]
    ) -> list[Candidate]:
        """``victims`` less those not needed: dearest first, each kept while ``still_enough``
        (given the bytes kept so far) holds without it."""
        kept = 0
        spared: set[str] = set()
        for c in sorted(victims, key=self.expected_seconds, reverse=True):
            if still_enough(kept + c.size):
                kept += c.size
                spared.add(c.ref)
        return [c for c in victims if c.ref not in spared]


def cost_order(
    chance: Mapping[str, float], hosts: Mapping[str, str], throughput: Mapping[str, float]
) -> CostOrder:
    """The cost order for files (``ref`` → source host) given the bytes per second measured
    per host; hosts not measured yet get ``DEFAULT_THROUGHPUT``."""
    seconds_per_byte = {
        ref: 1.0 / throughput[host] for ref, host in hosts.items() if throughput.get(host, 0) > 0
    }
    return CostOrder(chance, seconds_per_byte)


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
    cost: CostOrder | None = None,
) -> PrunePlan:
    """Evict unprotected files, least recently used first (ties: larger first, then by name),
    or by ``cost`` when given.

    With ``max_size`` and/or ``min_free``, stop as soon as both targets are met; with neither,
    evict every unprotected file.
    """
    files = list(candidates)
    total = sum(c.size for c in files)
    evictable = sorted(
        (c for c in files if not protected(c, now, keep_days)),
        key=lru_key if cost is None else cost.key,
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
    if cost is not None and not everything:
        after, freed = size, free
        removed = cost.spare(removed, lambda kept: satisfied(after + kept, freed - kept))
        size = total - sum(c.size for c in removed)
        free = free_bytes + (total - size)
    reached = everything or satisfied(size, free)
    return PrunePlan(tuple(removed), total, size, reached, keep_count)
