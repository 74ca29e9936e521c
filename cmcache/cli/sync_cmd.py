"""``sync``: fetch the configured sources."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.cli.output import error_item
from cmcache.core.errors import ExitCode
from cmcache.core.states import ListStatus

if TYPE_CHECKING:
    from cmcache.services.sources.sync import ListReport


def _describe(report: ListReport) -> str:
    name = f"{report.source}/{report.list}"
    if report.status == ListStatus.UPDATED:
        old, new = report.old_version or "?", report.new_version or "?"
        return f"{name}: updated {old} → {new} ({report.entries} models)"
    if report.status == ListStatus.ADDED:
        return f"{name}: added {report.new_version} ({report.entries} models)"
    if report.status == ListStatus.REMOVED:
        return f"{name}: removed"
    if report.status == ListStatus.FAILED:
        return f"{name}: failed: {report.message}"
    return f"{name}: unchanged {report.new_version or report.old_version}".rstrip()


@app.command()
def sync(
    sources: Annotated[
        list[str] | None, typer.Argument(metavar="SOURCE…", help="Sources to sync (default: all).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download lists even when unchanged.")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit 1 if anything would change.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="An unsafe or invalid entry fails its list.")
    ] = False,
) -> None:
    """Fetch manifests; only lists whose MD5 changed are downloaded."""
    from cmcache.services.sources.sync import sync_sources

    st = state()
    settings = st.settings()
    out = st.out
    if not settings.sources:
        out.info("no [[sources]] configured; the built-in catalog is always available")

    def on_list(report: ListReport) -> None:
        for warning in report.warnings:
            out.warn(warning)
        out.line(("would be " if check and report.status.changes else "") + _describe(report))

    report = sync_sources(
        settings,
        sources or (),
        force=force,
        check=check,
        strict=strict,
        on_list=on_list,
    )
    failed = report.failed
    code = 0
    if failed:
        code = ExitCode.MANIFEST
    elif check and report.changed:
        code = 1
    rows = [
        {
            k: str(v) if k == "status" else v
            for k, v in asdict(r).items()
            if k in ("source", "list", "status", "old_version", "new_version", "entries", "message")
        }
        for r in report.lists
    ]
    errors = [error_item(f"{r.source}/{r.list}", ExitCode.MANIFEST, r.message) for r in failed]
    if failed:
        out.error(f"{len(failed)} of {len(report.lists)} lists failed; previous copies stay in use")
    out.finish(
        {"lists": rows, "check": check},
        errors=errors,
        exit_code=code,
        partial=len(failed) < len(report.lists) if failed else None,
    )
