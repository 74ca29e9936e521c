"""Wiring shared by commands: a pull with progress on the terminal, and error items."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cmcache.cli.output import Output
    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import PullOptions, Target
    from cmcache.services.cache.store import Cache
    from cmcache.services.pull.run import PullReport


def pull_with_progress(
    settings: Settings,
    cache: Cache,
    targets: list[Target],
    out: Output,
    opts: PullOptions,
    *,
    force: bool = False,
    dry_run: bool = False,
    show_outcomes: bool = True,
    lookup: str = "pull",
) -> PullReport:
    """Pull with progress bars (on a terminal) or plain progress lines (off one)."""
    from cmcache.cli.progress import PullProgress
    from cmcache.services.pull.run import pull_with_engine

    with PullProgress(out, show_outcomes=show_outcomes) as progress:
        return pull_with_engine(
            settings,
            cache,
            targets,
            opts,
            progress.hooks(),
            force=force,
            dry_run=dry_run,
            lookup=lookup,
        )
