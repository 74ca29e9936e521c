"""Uses and pins: what `touch`, `pin` and `unpin` record."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cmcache.core.planning.sessions import burst_for
from cmcache.services.cache.store import open_cache
from cmcache.services.pull.run import resolve_refs

if TYPE_CHECKING:
    from cmcache.core.settings.model import Settings


def touch_models(
    settings: Settings, refs: list[str], *, claim: bool = False
) -> tuple[list[str], float | None]:
    """Record a use of each model now (one moment for all, in the order given). Returns their
    refs and, with ``claim``, the start of a workflow begun just now (by these uses or others
    within a launch's burst) that no `touch` before claimed, now claimed."""
    targets = resolve_refs(settings, refs)
    now = time.time()
    with open_cache(settings) as cache:
        for target in targets:
            cache.index.record_use(target.entry.folder, target.entry.filename, at=now)
        since = now - burst_for(settings.prefetch.session_gap)
        claimed = cache.index.claim_launch(since) if claim else None
    return [t.ref for t in targets], claimed


def release_launch(settings: Settings, start: float) -> None:
    """Give back a claimed launch whose prefetch did not run (another was running, or it
    failed to start): the next batch of its workflow may try again."""
    with open_cache(settings) as cache:
        cache.index.release_launch(start)


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
