"""``prune``: keep the cache within its budget."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.core.errors import UsageError
from cmcache.core.sizes import format_size, parse_size


def size_option(value: str | None, name: str) -> int | None:
    """A size flag's value, or a usage error naming the flag."""
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
    max_size: Annotated[
        str | None, typer.Option("--max-size", metavar="SIZE", help="Budget, e.g. 200G.")
    ] = None,
    keep_days: Annotated[
        float | None,
        typer.Option(
            "--keep-days", metavar="DAYS", min=0, help="Keep what was used this recently."
        ),
    ] = None,
    min_free: Annotated[
        str | None, typer.Option("--min-free", metavar="SIZE", help="Free space to keep.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, remove nothing.")] = False,
    partials: Annotated[
        bool,
        typer.Option("--partials", help="Remove partial downloads no live job will finish."),
    ] = False,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=0,
            help="With --partials: only those not written for DAYS days.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Remove models until the cache fits its budget, least recently used first (or by cost);
    with --partials, partial downloads nothing will finish instead."""
    from cmcache.services.cache.prune import run_prune
    from cmcache.services.cache.store import open_cache

    st = state()
    if partials or older_than is not None:
        if not partials:
            raise UsageError("--older-than goes with --partials", hint="cmcache prune --partials")
        if (max_size, keep_days, min_free) != (None, None, None):
            raise UsageError(
                "--partials removes only partial downloads; prune models in a separate call",
                hint="cmcache prune --partials && cmcache prune --max-size 200G",
            )
        _prune_partials(older_than, dry_run)
        return
    settings = st.settings()
    limit = size_option(max_size, "--max-size")
    limit = settings.cache.max_size if limit is None else limit
    free_target = size_option(min_free, "--min-free")
    free_target = settings.cache.min_free if free_target is None else free_target
    if limit is None and free_target is None and keep_days is None:
        raise UsageError(
            "prune needs a target: --max-size, --min-free or --keep-days (or cache.max_size)",
            hint="cmcache prune --max-size 200G",
        )
    with open_cache(settings) as cache:
        report = run_prune(
            cache,
            max_size=limit,
            min_free=free_target,
            keep_days=settings.cache.keep_days if keep_days is None else keep_days,
            dry_run=dry_run,
            on_skip=st.out.warn,
            settings=settings,
        )
    for ref in report.forgotten:
        st.out.warn(f"{ref} was already gone; forgotten")
    verb = "would remove" if dry_run else "removed"
    for c in report.removed:
        st.out.line(f"{verb} {c.ref} ({format_size(c.size)}, last used {_when(c.last_used)})")
    count = len(report.removed)
    st.out.info(
        f"{verb} {count} file{'' if count == 1 else 's'}, freed {format_size(report.freed)}; "
        f"managed size {format_size(report.managed_size)}"
    )
    if not report.plan.reached:
        st.out.warn(
            f"{report.plan.protected} protected files (pinned, recently used or downloading) "
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
                for c in report.removed
            ],
            "freed": report.freed,
            "managed_size": report.managed_size,
            "target_reached": report.plan.reached,
            "dry_run": dry_run,
        }
    )


def _prune_partials(older_than: float | None, dry_run: bool) -> None:
    """``prune --partials``: staging files of downloads nothing will finish; models stay."""
    from cmcache.services.cache.store import open_cache
    from cmcache.services.download.partials import remove_orphaned

    st = state()
    settings = st.settings()
    with open_cache(settings) as cache:
        removed = remove_orphaned(settings, cache, older_than=older_than, dry_run=dry_run)
        managed = cache.index.usage()[1]
    verb = "would remove" if dry_run else "removed"
    root = settings.cache.root
    for p in removed:
        written = _when(p.mtime)
        st.out.line(f"{verb} {p.relative_to(root)} ({format_size(p.bytes)}, written {written})")
    freed = sum(p.bytes for p in removed)
    count = len(removed)
    st.out.info(
        f"{verb} {count} partial download{'' if count == 1 else 's'}, freed {format_size(freed)}"
    )
    st.out.finish(
        {
            "removed": [],
            "partials": [{"path": p.relative_to(root), "bytes": p.bytes} for p in removed],
            "freed": freed,
            "managed_size": managed,
            "dry_run": dry_run,
        }
    )
