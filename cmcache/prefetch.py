"""Prefetch: keep the configured and the most-used models present, within the size budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.errors import RefError
from cmcache.prune import Candidate, protected

if TYPE_CHECKING:
    from cmcache.cache.index import Index
    from cmcache.catalog import Catalog
    from cmcache.manifest import Entry
    from cmcache.results import Target
    from cmcache.settings import PrefetchSettings


@dataclass(frozen=True)
class Wanted:
    """A model prefetch should make present, and how big it is thought to be."""

    target: Target
    size: int | None
    listed: bool  # named in [prefetch].models (else: popular)


@dataclass(frozen=True)
class PrefetchPlan:
    """Downloads to run, files to evict first, and what does not fit."""

    fetch: tuple[Wanted, ...]
    evict: tuple[Candidate, ...]
    skipped: tuple[tuple[Wanted, str], ...] = field(default=())


def wanted_entries(
    settings: PrefetchSettings, catalog: Catalog, index: Index, now: float | None = None
) -> tuple[list[Entry], list[str]]:
    """The listed models, then the ``popular`` most used within the window; plus warnings."""
    now = time.time() if now is None else now
    entries: dict[str, Entry] = {}
    warnings = []
    for ref in settings.models:
        try:
            entry = catalog.resolve(ref)
        except RefError as exc:
            warnings.append(f"[prefetch].models: {exc.message}")
            continue
        entries.setdefault(entry.ref, entry)
    listed = len(entries)
    if settings.popular:
        since = now - settings.window_days * 86400
        for folder, filename, _uses in index.most_used(since, settings.popular + listed):
            popular = catalog.get(f"{folder}/{filename}")
            if popular is not None and popular.ref not in entries:
                entries[popular.ref] = popular
            if len(entries) >= listed + settings.popular:
                break
    return list(entries.values()), warnings


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
        key=lambda c: (c.last_used, -c.size, c.ref),
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
            evictable.sort(key=lambda c: (c.last_used, -c.size, c.ref))
            skipped.append((want, f"needs {need} bytes; only {room} can be freed under max_size"))
            continue
        evict.extend(extra)
        used += need - sum(c.size for c in extra)
        fetch.append(want)
    return PrefetchPlan(tuple(fetch), tuple(evict), tuple(skipped))
