"""Uses and pins: what `touch`, `pin` and `unpin` record."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cmcache.services.cache.store import open_cache
from cmcache.services.pull.run import resolve_refs

if TYPE_CHECKING:
    from cmcache.core.settings.model import Settings


def touch_models(settings: Settings, refs: list[str]) -> list[str]:
    """Record a use of each model now (one moment for all, in the order given); returns their
    refs."""
    targets = resolve_refs(settings, refs)
    now = time.time()
    with open_cache(settings) as cache:
        for target in targets:
            cache.index.record_use(target.entry.folder, target.entry.filename, at=now)
    return [t.ref for t in targets]


def began_work(settings: Settings, since: float) -> bool:
    """Whether a workflow began (its models' first uses: a launch) at ``since`` or later."""
    with open_cache(settings) as cache:
        latest = cache.index.latest_launch()
    return latest is not None and latest >= since


def pin_models(settings: Settings, refs: list[str], *, pin: bool) -> list[str]:
    """Pin (or unpin) each model; returns their refs."""
    targets = resolve_refs(settings, refs)
    with open_cache(settings) as cache:
        for target in targets:
            if pin:
                cache.index.pin(target.entry.folder, target.entry.filename)
            else:
                cache.index.unpin(target.entry.folder, target.entry.filename)
    return [t.ref for t in targets]
