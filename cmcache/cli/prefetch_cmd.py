"""``prefetch``: keep wanted models present, within the budget (cron-safe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.cli.output import error_item
from cmcache.core.errors import worst_exit_code

if TYPE_CHECKING:
    from cmcache.cli.app import AppState


@dataclass
class Done:
    """What a prefetch run says in the JSON envelope."""

    data: dict[str, Any]
    errors: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0
    partial: bool = False
    ran: bool = True  # False: another prefetch was running, or it could not start


@app.command()
def prefetch(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
) -> None:
    """Make [prefetch] models, predicted and most used ones present, within max_size."""
    st = state()
    done = prefetch_now(st, dry_run=dry_run)
    st.out.finish(done.data, errors=done.errors, exit_code=done.exit_code, partial=done.partial)


def prefetch_now(st: AppState, *, dry_run: bool) -> Done:
    """Plan and (unless ``dry_run``) fetch, saying what happened on the way."""
    from cmcache.cli.progress import PullProgress
    from cmcache.core.states import PullOutcome
    from cmcache.services.cache.prefetch import run_prefetch
    from cmcache.services.cache.store import open_cache

    settings = st.settings()
    with open_cache(settings) as cache, PullProgress(st.out) as progress:
        report = run_prefetch(
            settings, cache, progress.hooks(), dry_run=dry_run, on_warning=st.out.warn
        )
    if report.busy:
        st.out.line("prefetch: another prefetch is running; nothing to do")
        return Done({"skipped": "another prefetch is running"}, ran=False)
    plan = report.plan
    if dry_run:
        for want in plan.fetch:
            st.out.line(f"would download {want.target.ref}: {want.reason}")
    failed = [o for o in report.outcomes if o.outcome == PullOutcome.FAILED]
    fetched = [o for o in report.outcomes if o.outcome.ok]
    st.out.line(
        f"prefetch: {report.present} present, "
        f"{'would download' if dry_run else 'downloaded'} "
        f"{len(plan.fetch) if dry_run else len(fetched)}, evicted {len(plan.evict)}, "
        f"skipped {len(plan.skipped)}, failed {len(failed)}"
    )
    return Done(
        {
            "present": report.present,
            "downloaded": [o.target.ref for o in fetched],
            "planned": [w.target.ref for w in plan.fetch] if dry_run else [],
            "reasons": {w.target.ref: w.reason for w in plan.fetch},
            "evicted": [c.ref for c in plan.evict],
            "skipped": [{"ref": w.target.ref, "reason": r} for w, r in plan.skipped],
        },
        [error_item(o.target.ref, o.code, o.message) for o in failed],
        worst_exit_code([o.code for o in failed]),
        bool(fetched),
    )
