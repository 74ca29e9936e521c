"""``report``: what holds space under root and could go, in one report."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.core.sizes import format_size

if TYPE_CHECKING:
    from cmcache.services.disk.report import WorkflowNeeds


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _table(columns: list[str], rows: list[list[str]]) -> None:
    """A section's rows, if it has any."""
    if rows:
        state().out.table(columns, rows)


def _workflow(w: WorkflowNeeds) -> dict[str, object]:
    data: dict[str, object] = {
        "workflow": w.workflow,
        "references": list(w.references),
        "missing": list(w.missing),
    }
    return data | ({"problem": w.problem} if w.problem else {})


@app.command()
def report(
    unused_days: Annotated[
        float | None,
        typer.Option(
            "--unused-days",
            metavar="N",
            min=0,
            help="Unused means no use in N days (default: cache.keep_days × 4).",
            show_default=False,
        ),
    ] = None,
    hash_files: Annotated[
        bool,
        typer.Option("--hash", help="Also hash unmanaged files (remembered until they change)."),
    ] = False,
) -> None:
    """Report unused models, unknown files, duplicates, stale partials, workflow needs."""
    from cmcache.cli.progress import PullProgress
    from cmcache.services.disk.report import disk_report

    st = state()
    with PullProgress(st.out, show_outcomes=False) as progress:
        found = disk_report(
            st.settings(),
            unused_days=unused_days,
            hash_files=hash_files,
            on_progress=progress.update,
        )
    out = st.out
    days = f"{found.unused_days:g}"
    out.line(f"unused managed models (no use in {days} days, or never): {len(found.unused)}")
    _table(
        ["ref", "bytes", "last used", "note"],
        [
            [u.ref, format_size(u.bytes), _when(u.last_used), "pinned" if u.pinned else ""]
            for u in found.unused
        ],
    )
    out.line(f"unmanaged files no catalog knows: {len(found.unknown)}")
    _table(["path", "bytes"], [[h.path, format_size(h.bytes)] for h in found.unknown])
    out.line(f"duplicates (the same bytes at several paths): {len(found.duplicates)}")
    _table(
        ["sha256", "bytes", "dedupe frees", "path"],
        [
            [d.sha256[:12], format_size(d.bytes), format_size(d.reclaimable), path]
            if at == 0
            else ["", "", "", path]
            for d in found.duplicates
            for at, path in enumerate(d.paths)
        ],
    )
    out.line(f"partial downloads with no live job: {len(found.partials)}")
    _table(["path", "bytes"], [[h.path, format_size(h.bytes)] for h in found.partials])
    if found.workflows:
        out.line(f"prefetch workflows: {len(found.workflows)}")
        _table(
            ["workflow", "models", "missing"],
            [
                [w.workflow, str(len(w.references)), w.problem or ", ".join(w.missing) or "none"]
                for w in found.workflows
            ],
        )
    if found.hashed:
        out.info(f"hashed {found.hashed} files ({format_size(found.hashed_bytes)})")
    if found.unhashed:
        out.info(
            f"{found.unhashed} unmanaged files have no known sha256: duplicates among them are "
            "not shown (`--hash` hashes them)"
        )
    out.finish(
        {
            "unused": [
                {"ref": u.ref, "bytes": u.bytes, "last_used": u.last_used, "pinned": u.pinned}
                for u in found.unused
            ],
            "unknown": [{"path": h.path, "bytes": h.bytes} for h in found.unknown],
            "duplicates": [
                {
                    "sha256": d.sha256,
                    "bytes": d.bytes,
                    "paths": list(d.paths),
                    "reclaimable": d.reclaimable,
                }
                for d in found.duplicates
            ],
            "partials": [{"path": h.path, "bytes": h.bytes} for h in found.partials],
            "workflows": [_workflow(w) for w in found.workflows],
            "unused_days": found.unused_days,
            "hashed": found.hashed,
        }
    )
