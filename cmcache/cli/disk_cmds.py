"""``du`` and ``dedupe``: where the bytes under root are, and identical files made one."""

from __future__ import annotations

from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.core.sizes import format_size


@app.command()
def du(
    folder: Annotated[
        str | None,
        typer.Option(
            "--folder",
            metavar="FOLDER",
            help="Only this model folder (e.g. loras).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show the bytes under root by state and by folder, against the budget and free space."""
    from cmcache.core.states import DiskState
    from cmcache.services.disk.du import disk_usage

    st = state()
    usage = disk_usage(st.settings(), folder)
    st.out.line(
        f"{usage.root}{f' ({folder})' if folder else ''}: {format_size(usage.total)} in use, "
        f"{format_size(usage.free)} free on its disk"
    )
    rows = []
    for state_name, size in usage.states.items():
        note = "outside root, not in the total" if state_name == DiskState.EXTERNAL else ""
        rows.append([str(state_name), format_size(size), note])
    st.out.table(["state", "bytes", "note"], rows)
    folders = sorted(usage.folders.items(), key=lambda kv: (-kv[1], kv[0]))
    st.out.table(["folder", "bytes"], [[name, format_size(size)] for name, size in folders])
    if usage.budget is not None:
        share = f" ({100 * usage.managed / usage.budget:.0f}%)" if usage.budget else ""
        st.out.line(
            f"budget: {format_size(usage.managed)} managed of {format_size(usage.budget)}{share}"
        )
    st.out.finish(
        {
            "root": str(usage.root),
            "total": usage.total,
            "states": {str(s): size for s, size in usage.states.items()},
            "folders": usage.folders,
            "budget": usage.budget,
            "free": usage.free,
        }
    )


@app.command()
def dedupe(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, link nothing.")] = False,
) -> None:
    """Make identical files under root hard links of one file (known sha256 only)."""
    from cmcache.services.cache.store import open_cache
    from cmcache.services.disk.dedupe import dedupe as run_dedupe

    st = state()
    with open_cache(st.settings()) as cache:
        report = run_dedupe(cache, dry_run=dry_run, on_skip=st.out.warn)
    verb = "would link" if dry_run else "linked"
    for group in report.linked:
        for path in group.linked:
            st.out.line(f"{verb} {path} → {group.kept} ({format_size(group.size)})")
    count = sum(len(g.linked) for g in report.linked)
    st.out.info(
        f"{verb} {count} file{'' if count == 1 else 's'}, "
        f"{'would reclaim' if dry_run else 'reclaimed'} {format_size(report.reclaimed)}"
    )
    if report.unhashed:
        st.out.info(
            f"{report.unhashed} unmanaged files have no known sha256 and were not compared; "
            "`cmcache report --hash` hashes them"
        )
    st.out.finish(
        {
            "linked": [
                {"sha256": g.sha256, "kept": g.kept, "linked": list(g.linked)}
                for g in report.linked
            ],
            "reclaimed": report.reclaimed,
            "dry_run": report.dry_run,
        }
    )
