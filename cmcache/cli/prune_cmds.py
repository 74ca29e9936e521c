"""``prune`` and ``prefetch``: keep the cache within its budget and stocked."""

from __future__ import annotations

import datetime
import shutil
import time
from typing import Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.cli.common import pull_targets
from cmcache.cli.output import error_item
from cmcache.errors import UsageError, worst_exit_code
from cmcache.sizes import format_size, parse_size


def _size_option(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


@app.command()
def prune(
    max_size: Annotated[str | None, typer.Option("--max-size", help="Budget, e.g. 200G.")] = None,
    keep_days: Annotated[
        float | None, typer.Option("--keep-days", min=0, help="Keep what was used this recently.")
    ] = None,
    min_free: Annotated[str | None, typer.Option("--min-free", help="Free space to keep.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, remove nothing.")] = False,
) -> None:
    """Remove least recently used models until the cache fits its budget."""
    from cmcache.cli.common import open_cache
    from cmcache.prune import candidates, execute, plan_prune, reconcile

    st = state()
    settings = st.settings()
    limit = _size_option(max_size, "--max-size")
    limit = settings.cache.max_size if limit is None else limit
    free_target = _size_option(min_free, "--min-free")
    free_target = settings.cache.min_free if free_target is None else free_target
    if limit is None and free_target is None and keep_days is None:
        raise UsageError(
            "prune needs a target: --max-size, --min-free or --keep-days (or cache.max_size)",
            hint="cmcache prune --max-size 200G",
        )
    store, index = open_cache(settings)
    if not dry_run:
        for gone in reconcile(index, store):
            st.out.warn(f"{gone.folder}/{gone.filename} was already gone; forgotten")
    plan = plan_prune(
        candidates(index),
        now=time.time(),
        keep_days=settings.cache.keep_days if keep_days is None else keep_days,
        max_size=limit,
        min_free=free_target,
        free_bytes=shutil.disk_usage(store.root).free,
    )
    removed = list(plan.remove) if dry_run else execute(plan, index, store, st.out.warn)
    verb = "would remove" if dry_run else "removed"
    for c in removed:
        st.out.line(f"{verb} {c.ref} ({format_size(c.size)}, last used {_when(c.last_used)})")
    freed = sum(c.size for c in removed)
    managed = plan.managed_size - freed
    st.out.info(
        f"{verb} {len(removed)} files, freed {format_size(freed)}; "
        f"managed size {format_size(managed)}"
    )
    if not plan.reached:
        st.out.warn(
            f"{plan.protected} protected files (pinned, recently used or downloading) "
            "keep the cache above its target"
        )
    st.out.finish(
        {
            "removed": [
                {
                    "folder": c.folder,
                    "filename": c.filename,
                    "bytes": c.size,
                    "last_used": c.last_used,
                }
                for c in removed
            ],
            "freed": freed,
            "managed_size": managed,
            "target_reached": plan.reached,
            "dry_run": dry_run,
        }
    )


@app.command()
def prefetch(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
) -> None:
    """Make [prefetch] models and the most used ones present, within max_size."""
    from cmcache.cache.locks import FileLock
    from cmcache.catalog import load_catalog
    from cmcache.cli.common import open_cache
    from cmcache.engine.scheduler import PRIORITIES
    from cmcache.prefetch import Wanted, plan_prefetch, wanted_entries
    from cmcache.prune import PrunePlan, candidates, execute
    from cmcache.pull import present, resolve_targets
    from cmcache.results import PullOptions

    st = state()
    settings = st.settings()
    store, index = open_cache(settings)
    lock = FileLock(store.meta_dir / "prefetch.lock")
    if not lock.try_acquire():
        st.out.line("prefetch: another prefetch is running; nothing to do")
        st.out.finish({"skipped": "another prefetch is running"})
        return
    catalog = load_catalog(settings)
    entries, warnings = wanted_entries(settings.prefetch, catalog, index)
    for warning in warnings:
        st.out.warn(warning)
    targets = resolve_targets(catalog, store, [e.ref for e in entries])
    listed = {e.ref for e in entries[: len(settings.prefetch.models)]}
    missing = [
        Wanted(t, t.entry.size, t.entry.ref in listed)
        for t in targets
        if present(index, t, force=False) is None
    ]
    plan = plan_prefetch(
        missing,
        candidates(index),
        now=time.time(),
        keep_days=settings.cache.keep_days,
        max_size=settings.cache.max_size,
        never_evict={t.entry.ref for t in targets},
    )
    for want, reason in plan.skipped:
        st.out.warn(f"prefetch: skipped {want.target.entry.ref}: {reason}")
    results: list[Any] = []
    if not dry_run:
        execute(PrunePlan(plan.evict, 0, 0, True, 0), index, store, st.out.warn)
        if plan.fetch:
            results = list(
                pull_targets(
                    settings,
                    store,
                    index,
                    [w.target for w in plan.fetch],
                    st.out,
                    PullOptions(priority=PRIORITIES["low"]),
                ).outcomes
            )
    failed = [o for o in results if o.outcome == "failed"]
    fetched = [o for o in results if o.outcome in ("downloaded", "cached")]
    summary = (
        f"prefetch: {len(targets) - len(missing)} present, "
        f"{'would download' if dry_run else 'downloaded'} "
        f"{len(plan.fetch) if dry_run else len(fetched)}, evicted {len(plan.evict)}, "
        f"skipped {len(plan.skipped)}, failed {len(failed)}"
    )
    st.out.line(summary)
    st.out.finish(
        {
            "present": len(targets) - len(missing),
            "downloaded": [o.target.entry.ref for o in fetched],
            "planned": [w.target.entry.ref for w in plan.fetch] if dry_run else [],
            "evicted": [c.ref for c in plan.evict],
            "skipped": [{"ref": w.target.entry.ref, "reason": r} for w, r in plan.skipped],
        },
        errors=[error_item(o.target.entry.ref, o.code, o.message) for o in failed],
        exit_code=worst_exit_code([o.code for o in failed]),
        partial=bool(fetched),
    )
