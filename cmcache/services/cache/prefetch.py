"""Prefetch: keep the configured, the predicted and the most-used models present, within the
size budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import ManifestError, RefError
from cmcache.core.planning.prefetch import PrefetchPlan, Wanted, plan_prefetch
from cmcache.core.planning.queue import PRIORITIES
from cmcache.core.targets import Outcome, PullHooks, PullOptions
from cmcache.services.cache.predict import cost_order_for, read_forecast
from cmcache.services.cache.prune import candidates, execute
from cmcache.services.cluster.node import withdraw_quietly
from cmcache.services.download.placement import placement_for
from cmcache.services.pull.run import pull_with_engine
from cmcache.services.sources.catalog import load_catalog

if TYPE_CHECKING:
    from collections.abc import Callable

    from cmcache.adapters.storage.index import Index
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.catalog import Catalog
    from cmcache.core.manifest.entry import Entry
    from cmcache.core.planning.predict import Forecast
    from cmcache.core.settings.model import PrefetchSettings, Settings
    from cmcache.services.cache.store import Cache
    from cmcache.services.comfyui.workflow import Unknown


@dataclass(frozen=True)
class Want:
    """A model prefetch keeps present, why, and (for a predicted one) its chance of use."""

    entry: Entry
    reason: str
    chance: float | None = None


def wanted_entries(
    settings: PrefetchSettings,
    catalog: Catalog,
    index: Index,
    now: float | None = None,
    seen: Forecast | None = None,
) -> tuple[list[Want], list[str]]:
    """The listed models, then (with ``seen``) the predicted ones, then the ``popular`` most
    used within the window; plus warnings."""
    now = time.time() if now is None else now
    wants: dict[str, Want] = {}
    warnings = []
    for ref in settings.models:
        try:
            entry = catalog.resolve(ref)
        except RefError as exc:
            warnings.append(f"[prefetch].models: {exc.message}")
            continue
        wants.setdefault(entry.ref, Want(entry, "listed in [prefetch] models"))
    if seen is not None and settings.predict:
        for guess in seen.worth_fetching(settings.predict_limit):
            known = catalog.get(guess.ref)
            if known is not None and known.ref not in wants:
                wants[known.ref] = Want(known, f"predicted: {guess.reason}", guess.score)
    if settings.popular:
        since = now - settings.window_days * 86400
        enough = len(wants) + settings.popular
        for folder, filename, uses in index.most_used(since, enough):
            popular = catalog.get(f"{folder}/{filename}")
            if popular is not None and popular.ref not in wants:
                wants[popular.ref] = Want(
                    popular, f"among the {settings.popular} most used: {uses} uses lately"
                )
            if len(wants) >= enough:
                break
    return list(wants.values()), warnings


def workflow_entries(
    settings: Settings, catalog: Catalog, store: ModelStore
) -> tuple[list[Want], list[str]]:
    """What the ``[prefetch] workflows`` files need; a warning for what nothing supplies, for
    a declared model that is refused, and for a file that cannot be read (the others count)."""
    from cmcache.services.comfyui.workflow import plan_workflows, workflow_files

    files = workflow_files(settings)
    policy = settings.download_policy()
    entries: dict[str, Entry] = {}
    unknown: list[Unknown] = []
    warnings: list[str] = []
    for file in dict.fromkeys(files):  # one at a time: a broken file costs only its own models
        try:
            plan = plan_workflows(catalog, store, [(str(file), file.read_bytes())], policy=policy)
        except ManifestError as exc:
            warnings.append(f"[prefetch].workflows: skipped {exc.message}")
            continue
        except OSError as exc:
            warnings.append(f"[prefetch].workflows: skipped {file}: {exc.strerror or exc}")
            continue
        for target in plan.targets:
            entries.setdefault(target.ref, target.entry)
        unknown += plan.unknown
    for u in unknown:
        if u.ref not in entries:  # another workflow supplies it
            warnings.append(f"[prefetch].workflows: {u.ref} ({u.workflow}): {u.reason}")
    return [Want(e, "needed by a [prefetch] workflow") for e in entries.values()], warnings


@dataclass(frozen=True)
class PrefetchReport:
    """What prefetch found, planned and did; ``busy`` when another prefetch was running."""

    busy: bool = False
    wanted: int = 0
    present: int = 0
    plan: PrefetchPlan = field(default_factory=lambda: PrefetchPlan((), ()))
    outcomes: tuple[Outcome, ...] = ()
    dry_run: bool = False


def run_prefetch(
    settings: Settings,
    cache: Cache,
    hooks: PullHooks,
    *,
    dry_run: bool,
    on_warning: Callable[[str], None],
) -> PrefetchReport:
    """Plan within ``max_size``, evict what the plan frees, then pull at low priority."""
    lock = FileLock(cache.store.meta_dir / "prefetch.lock")
    if not lock.try_acquire():
        return PrefetchReport(busy=True)
    try:
        catalog = load_catalog(settings)
        now = time.time()
        cost_policy = settings.cache.policy == "cost"
        seen = None
        if settings.prefetch.predict or cost_policy:
            seen = read_forecast(settings, cache.index, now, planning=True)
        wants, warnings = wanted_entries(settings.prefetch, catalog, cache.index, now, seen)
        flows, flow_warnings = workflow_entries(settings, catalog, cache.store)
        listed = {w.entry.ref for w in wants}
        wants += [w for w in flows if w.entry.ref not in listed]
        for warning in [*warnings, *flow_warnings]:
            on_warning(warning)
        targets = [(cache.store.target(w.entry), w) for w in wants]
        placement = placement_for(settings, cache.index)
        missing = [
            Wanted(t, t.entry.size, w.reason, w.chance)
            for t, w in targets
            if placement.present(t, force=False) is None
        ]
        wanted_refs = {t.ref for t, _w in targets}
        plan = plan_prefetch(
            missing,
            candidates(cache.index),
            now=now,
            keep_days=settings.cache.keep_days,
            max_size=settings.cache.max_size,
            never_evict=wanted_refs,
            chance=seen.chances() if seen is not None else None,
            cost=cost_order_for(cache.index, seen) if seen is not None and cost_policy else None,
        )
        for want, reason in plan.skipped:
            on_warning(f"prefetch: skipped {want.target.ref}: {reason}")
        outcomes: tuple[Outcome, ...] = ()
        if not dry_run:
            evicted = execute(
                plan.evict,
                cache.index,
                cache.store,
                keep_days=settings.cache.keep_days,
                keep=wanted_refs,
                on_skip=on_warning,
            )
            withdraw_quietly(settings, [c.ref for c in evicted])
            if plan.fetch:
                outcomes = pull_with_engine(
                    settings,
                    cache,
                    [w.target for w in plan.fetch],
                    PullOptions(priority=PRIORITIES["low"], count_use=False),
                    hooks,
                ).outcomes
        return PrefetchReport(
            wanted=len(targets),
            present=len(targets) - len(missing),
            plan=plan,
            outcomes=outcomes,
            dry_run=dry_run,
        )
    finally:
        lock.release()
