"""``verify`` and ``scan``: check managed files, adopt files already under root."""

from __future__ import annotations

from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.cli.common import pull_with_progress
from cmcache.cli.output import error_item
from cmcache.core.errors import ExitCode


@app.command()
def verify(
    refs: Annotated[
        list[str] | None, typer.Argument(metavar="REF…", help="Models (default: all managed).")
    ] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Download bad or missing ones again.")] = False,
) -> None:
    """Re-hash managed files against their manifests."""
    from cmcache.core.states import CheckStatus, PullOutcome
    from cmcache.core.targets import PullOptions
    from cmcache.services.cache.store import open_cache
    from cmcache.services.cache.verify import check_models

    st = state()
    settings = st.settings()
    with open_cache(settings) as cache:
        checked, repairable = check_models(settings, cache, refs or [])
        for c in checked:
            if c.status == CheckStatus.SKIPPED:
                st.out.warn(f"{c.ref}: resolves outside the model root (a symlink?); skipped")
            else:
                st.out.line(f"{c.status} {c.ref}")
        bad = [c for c in checked if c.status in (CheckStatus.BAD, CheckStatus.MISSING)]
        fixed: list[str] = []
        if fix and repairable:
            report = pull_with_progress(
                settings, cache, repairable, st.out, PullOptions(), force=True
            )
            fixed = [o.target.ref for o in report.outcomes if o.outcome == PullOutcome.DOWNLOADED]
    left = [c for c in bad if c.ref not in fixed]
    errors = [error_item(c.ref, ExitCode.INTEGRITY, f"{c.ref}: {c.status}") for c in left]
    ok = sum(1 for c in checked if c.status == CheckStatus.OK)
    summary = f"verified {len(checked)}: {ok} ok, {len(bad)} bad or missing"
    skipped = len(checked) - ok - len(bad)
    summary += f", {skipped} skipped" if skipped else ""
    st.out.info(summary + (f", {len(fixed)} fixed" if fix else ""))
    st.out.finish(
        {
            "checked": [
                {"ref": c.ref, "status": str(c.status), "expected": c.expected, "actual": c.actual}
                for c in checked
            ],
            "fixed": fixed,
        },
        errors=errors,
        exit_code=ExitCode.INTEGRITY if left else 0,
        partial=bool(fixed),
    )


@app.command()
def scan() -> None:
    """Adopt files already under root that match catalog entries."""
    from cmcache.services.cache.store import open_cache
    from cmcache.services.cache.verify import scan_root

    st = state()
    settings = st.settings()
    with open_cache(settings) as cache:
        found = scan_root(settings, cache)
    for item in found:
        if item.adopted:
            st.out.line(f"adopted {item.ref}")
        else:
            st.out.warn(f"{item.ref}: not adopted: {item.reason}")
    adopted = [f.ref for f in found if f.adopted]
    st.out.info(f"adopted {len(adopted)} files")
    st.out.finish(
        {
            "adopted": adopted,
            "skipped": [{"ref": f.ref, "reason": f.reason} for f in found if not f.adopted],
        }
    )
