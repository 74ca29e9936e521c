"""``comfyui workflow``: what a workflow needs, model by model; its declared models on demand."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmcache.cli.app import state
from cmcache.cli.comfyui_cmds import comfyui_app
from cmcache.cli.output import error_item
from cmcache.core.errors import ExitCode, UsageError, worst_exit_code

if TYPE_CHECKING:
    from cmcache.core.targets import Outcome


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read workflow {path}: {exc.strerror or exc}") from None


def _result(o: Outcome) -> dict[str, Any]:
    return {
        "ref": o.target.ref,
        "path": str(o.path),
        "outcome": str(o.outcome),
        "bytes": o.bytes,
        "sha256": o.sha256,
        "message": o.message,
    }


@comfyui_app.command("workflow")
def comfyui_workflow(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE…",
            help="Workflows (UI or API JSON, or a body posted to /prompt); '-' reads stdin.",
        ),
    ],
    pull: Annotated[
        bool, typer.Option("--pull", help="Then download every on-demand model (high priority).")
    ] = False,
) -> None:
    """Say what each model of a workflow is (present, on-demand, unknown, refused) and make
    its declared models from allowed hosts on-demand entries of the list `workflow`."""
    from cmcache.cli.common import pull_with_progress
    from cmcache.core.planning.queue import parse_priority
    from cmcache.core.targets import PullOptions
    from cmcache.services.cache.store import open_cache
    from cmcache.services.comfyui.workflow_states import ON_DEMAND, check_workflows
    from cmcache.services.pull.run import resolve_refs

    if [str(f) for f in files].count("-") > 1:
        raise UsageError("'-' (stdin) can be given once")
    st = state()
    settings = st.settings()
    report = check_workflows(settings, [(str(f), _read(f)) for f in files])
    st.out.table(
        ["ref", "state", "why"], [[m.ref, m.state, m.reason] for m in report.models]
    )
    errors = [error_item(m.ref, ExitCode.MANIFEST, m.reason) for m in report.missing]
    codes = [int(ExitCode.MANIFEST)] * len(errors)
    results: list[dict[str, Any]] = []
    wanted = [m.ref for m in report.models if m.state == ON_DEMAND]
    if pull and wanted:
        targets = resolve_refs(settings, wanted)
        with open_cache(settings) as cache:
            opts = PullOptions(priority=parse_priority("high"))
            pulled = pull_with_progress(settings, cache, targets, st.out, opts)
        results = [_result(o) for o in pulled.outcomes]
        errors += [error_item(o.target.ref, o.code, o.message) for o in pulled.failed]
        codes += [o.code for o in pulled.failed]
    st.out.finish(
        {
            "models": [
                {
                    "ref": m.ref,
                    "folder": m.folder,
                    "filename": m.filename,
                    "state": m.state,
                    "reason": m.reason,
                    "url": m.url,
                    "source": m.source,
                }
                for m in report.models
            ],
            "registered": report.registered,
            "results": results,
        },
        errors=errors,
        exit_code=worst_exit_code(codes),
        partial=len(errors) < len(report.models),
    )
