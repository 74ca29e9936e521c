"""Wiring shared by commands: the cache of this root and a downloader with progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cmcache.cache.index import Index
    from cmcache.cache.store import ModelStore
    from cmcache.cli.output import Output
    from cmcache.cli.progress import PullProgress
    from cmcache.download import Downloader
    from cmcache.engine.link import EngineLink
    from cmcache.pull import PullReport
    from cmcache.results import PullOptions, Target
    from cmcache.settings import Settings


def open_cache(settings: Settings) -> tuple[ModelStore, Index]:
    """The store under ``cache.root`` and its index, created when missing."""
    from cmcache.cache.index import Index
    from cmcache.cache.store import ModelStore

    store = ModelStore(settings.cache.root)
    store.prepare()
    return store, Index(store.meta_dir / "index.sqlite3")


def downloader(
    settings: Settings,
    store: ModelStore,
    index: Index,
    link: EngineLink,
    progress: PullProgress | None = None,
) -> Downloader:
    """A downloader whose callbacks drive ``progress`` (when given)."""
    from cmcache.download import Downloader
    from cmcache.engine.resolve import Resolver

    resolver = Resolver(settings.token_for, wait=min(1.0, settings.download.retry_wait))
    if progress is None:
        return Downloader(settings, store, index, link, resolver)
    return Downloader(
        settings,
        store,
        index,
        link,
        resolver,
        on_progress=progress.update,
        on_note=progress.note,
        on_outcome=progress.outcome,
    )


def pull_targets(
    settings: Settings,
    store: ModelStore,
    index: Index,
    targets: list[Target],
    out: Output,
    opts: PullOptions,
    *,
    force: bool = False,
    dry_run: bool = False,
    show_outcomes: bool = True,
) -> PullReport:
    """Pull with progress on the terminal; a private daemon left idle is stopped after."""
    from cmcache.cli.progress import PullProgress
    from cmcache.engine.link import EngineLink
    from cmcache.pull import pull

    link = EngineLink(settings, keep=opts.detach)
    with PullProgress(out, show_outcomes=show_outcomes) as progress:
        try:
            return pull(
                targets,
                index=index,
                make_downloader=lambda: downloader(settings, store, index, link, progress),
                opts=opts,
                force=force,
                dry_run=dry_run,
                on_outcome=progress.outcome,
            )
        finally:
            link.finish()
