"""``pull``: bring models (and what workflows need) to their final paths, verified."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.cli.common import pull_with_progress
from cmcache.cli.output import error_item
from cmcache.core.errors import ExitCode, UsageError, worst_exit_code
from cmcache.core.sizes import parse_size

if TYPE_CHECKING:
    from cmcache.core.targets import Outcome
    from cmcache.services.comfyui.workflow import Unknown


def _read(path: Path, flag: str) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {flag} {path}: {exc}") from None


def _row(o: Outcome) -> dict[str, Any]:
    entry = o.target.entry
    return {
        "ref": o.target.ref,
        "folder": entry.folder,
        "filename": entry.filename,
        "path": str(o.path),
        "outcome": str(o.outcome),
        "bytes": o.bytes,
        "seconds": round(o.seconds, 3),
        "sha256": o.sha256,
    }


def _unknown_row(u: Unknown) -> dict[str, Any]:
    return {
        "ref": u.ref,
        "folder": u.folder,
        "filename": u.filename,
        "path": None,
        "outcome": str(u.outcome),
        "bytes": 0,
        "seconds": 0,
        "sha256": None,
        "workflow": u.workflow,
        "candidates": list(u.candidates),
        "reason": u.reason,
    }


@app.command()
def pull(
    refs: Annotated[
        list[str] | None, typer.Argument(metavar="REF…", help="Models: ref, alias, name or URL.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="FILE", help="Refs, one per line ('-' = stdin)."),
    ] = None,
    workflow: Annotated[
        list[Path] | None,
        typer.Option(
            "--workflow", metavar="FILE", help="A ComfyUI workflow (UI or API JSON; '-' = stdin)."
        ),
    ] = None,
    folder: Annotated[
        str | None,
        typer.Option("--folder", metavar="FOLDER", help="Folder for a link or an hf: ref."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="File name for the one link or ref given."),
    ] = None,
    find: Annotated[
        bool,
        typer.Option("--find", help="Look for a workflow's unknown models on Civitai."),
    ] = False,
    priority: Annotated[
        str, typer.Option("--priority", metavar="PRIORITY", help="high, normal, low or a number.")
    ] = "normal",
    concurrent: Annotated[
        int | None, typer.Option("--concurrent", metavar="N", min=1, help="Downloads at once.")
    ] = None,
    split: Annotated[
        int | None, typer.Option("--split", metavar="N", min=1, max=16, help="Segments per file.")
    ] = None,
    max_speed: Annotated[
        str | None, typer.Option("--max-speed", metavar="SIZE", help="Per-file cap, e.g. 50M.")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Queue and return; the daemon keeps going.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be downloaded.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Download even if present.")] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="HOST",
            help="Also fetch a workflow's declared models from HOST (repeatable).",
        ),
    ] = None,
) -> None:
    """Download models, verify them and place them atomically."""
    from cmcache.cli.progress import outcome_line
    from cmcache.core.planning.queue import parse_priority
    from cmcache.core.refs import read_ref_lines
    from cmcache.core.states import PullOutcome
    from cmcache.core.targets import PullOptions
    from cmcache.services.cache.store import open_cache_for_reading
    from cmcache.services.pull.request import PullRequest, pull_request

    st = state()
    out = st.out
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
    named = list(refs or []) + (read_ref_lines(_read(file, "--file").splitlines()) if file else [])
    flows = [(str(p), _read(p, "--workflow").encode()) for p in workflow or []]
    if not named and not flows:
        raise UsageError(
            "name at least one model (or --file, --workflow)", hint="cmcache pull sdxl"
        )
    if find and not flows:
        raise UsageError("--find looks for what a workflow names: give --workflow FILE")
    settings = st.settings()
    request = PullRequest(named, flows, folder, name, find, tuple(allow_host or ()))
    targets, unknown = pull_request(settings, request, on_note=out.warn)
    for u in unknown:
        out.error(f"{u.ref} (in {u.workflow}): {u.reason}")
        for line in u.candidates:
            out.error(f"  {line}")
    with open_cache_for_reading(settings) as cache:
        report = pull_with_progress(
            settings, cache, targets, out, opts, force=force, dry_run=dry_run
        )
    for outcome in report.outcomes:
        if outcome.outcome == PullOutcome.PLANNED:
            out.line(outcome_line(outcome))
    failed = report.failed
    errors = [error_item(o.target.ref, o.code, o.message) for o in failed]
    errors += [error_item(u.ref, ExitCode.MANIFEST, u.reason) for u in unknown]
    code = worst_exit_code([o.code for o in failed] + [ExitCode.MANIFEST] * len(unknown))
    total = len(report.outcomes) + len(unknown)
    if errors and total > 1:
        out.error(f"{len(errors)} of {total} models failed, are unknown or were refused")
    out.finish(
        {"results": [_row(o) for o in report.outcomes] + [_unknown_row(u) for u in unknown]},
        errors=errors,
        exit_code=code,
        partial=len(errors) < total,
    )
