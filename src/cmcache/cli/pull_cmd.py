"""``pull``: bring models to their final paths, verified."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.cli.common import pull_with_progress
from cmcache.cli.output import error_item
from cmcache.core.errors import UsageError, worst_exit_code
from cmcache.core.sizes import parse_size


def _refs(refs: list[str] | None, file: Path | None) -> list[str]:
    from cmcache.core.refs import read_ref_lines

    collected = list(refs or [])
    if file is not None:
        if str(file) == "-":
            collected += read_ref_lines(sys.stdin)
        else:
            try:
                collected += read_ref_lines(file.read_text().splitlines())
            except OSError as exc:
                raise UsageError(f"cannot read --file {file}: {exc.strerror or exc}") from None
    if not collected:
        raise UsageError("name at least one model (or --file)", hint="cmcache pull sdxl")
    return collected


@app.command()
def pull(
    refs: Annotated[
        list[str] | None, typer.Argument(help="Models: ref, alias, name or URL.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Refs, one per line ('-' = stdin).")
    ] = None,
    folder: Annotated[str | None, typer.Option("--folder", help="Folder for a URL ref.")] = None,
    priority: Annotated[
        str, typer.Option("--priority", help="high, normal, low or a number.")
    ] = "normal",
    concurrent: Annotated[
        int | None, typer.Option("--concurrent", min=1, help="Downloads at once.")
    ] = None,
    split: Annotated[
        int | None, typer.Option("--split", min=1, max=16, help="Segments per file.")
    ] = None,
    max_speed: Annotated[
        str | None, typer.Option("--max-speed", help="Per-file cap, e.g. 50M.")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Queue and return; the daemon keeps going.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be downloaded.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Download even if present.")] = False,
) -> None:
    """Download models, verify them and place them atomically."""
    from cmcache.cli.progress import outcome_line
    from cmcache.core.planning.queue import parse_priority
    from cmcache.core.states import PullOutcome
    from cmcache.core.targets import PullOptions
    from cmcache.services.cache import open_cache
    from cmcache.services.pull import resolve_refs

    st = state()
    out = st.out
    settings = st.settings()
    try:
        opts = PullOptions(
            priority=parse_priority(priority),
            concurrent=concurrent,
            split=split,
            max_speed=parse_size(max_speed) if max_speed else 0,
            detach=detach,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    targets = resolve_refs(settings, _refs(refs, file), folder)
    with open_cache(settings) as cache:
        report = pull_with_progress(
            settings, cache, targets, out, opts, force=force, dry_run=dry_run
        )
    for outcome in report.outcomes:
        if outcome.outcome == PullOutcome.PLANNED:
            out.line(outcome_line(outcome))
    results: list[dict[str, Any]] = [
        {
            "ref": o.target.ref,
            "folder": o.target.entry.folder,
            "filename": o.target.entry.filename,
            "path": str(o.target.final),
            "outcome": str(o.outcome),
            "bytes": o.bytes,
            "seconds": round(o.seconds, 3),
            "sha256": o.sha256,
        }
        for o in report.outcomes
    ]
    failed = report.failed
    errors = [error_item(o.target.ref, o.code, o.message) for o in failed]
    code = worst_exit_code([o.code for o in failed])
    if failed and len(report.outcomes) > 1:
        out.error(f"{len(failed)} of {len(report.outcomes)} models failed")
    out.finish(
        {"results": results},
        errors=errors,
        exit_code=code,
        partial=len(failed) < len(report.outcomes),
    )
