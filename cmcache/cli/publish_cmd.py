"""``publish``: lists and a versions index from a model folder, for `cmcache sync` elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.core.errors import UsageError
from cmcache.core.sizes import format_size


@app.command()
def publish(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="A folder of model folders: checkpoints/…, loras/…."),
    ],
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url", metavar="URL", help="Where DIR will be served, e.g. https://host/models."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Where to write the lists (default: DIR)."),
    ] = None,
    list_by: Annotated[
        str,
        typer.Option(
            "--list-by",
            metavar="folder|one",
            help="folder: one list per model folder; one: a single list.",
        ),
    ] = "folder",
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="The list's name with --list-by one.")
    ] = "models",
    bundle: Annotated[
        list[str] | None,
        typer.Option(
            "--bundle",
            metavar="NAME=GLOB",
            help="Pack the files matching GLOB (folder/file) into one zip, NAME.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Hash and report; write nothing.")
    ] = False,
) -> None:
    """Hash a model folder and write cmcache lists plus model_versions.json."""
    from cmcache.cli.progress import PullProgress
    from cmcache.services.publish import publish as run_publish

    st = state()
    target = out or directory
    bundles = {}
    for spec in bundle or []:
        bundle_name, eq, pattern = spec.partition("=")
        if not eq or not pattern:
            raise UsageError(f"--bundle {spec!r}: expected NAME=GLOB, e.g. pack=loras/pack/*")
        bundles[bundle_name] = pattern
    with PullProgress(st.out, show_outcomes=False) as progress:
        report = run_publish(
            directory,
            base_url,
            target,
            list_by=list_by,
            name=name,
            bundles=bundles,
            dry_run=dry_run,
            on_progress=progress.update,
        )
    for warning in report.warnings:
        st.out.warn(warning)
    verb = "would write" if dry_run else "wrote"
    for item in report.lists:
        st.out.line(f"{item.name}: {item.status} {item.version} ({item.files} models)".rstrip())
    rate = report.bytes_hashed / report.seconds if report.seconds else 0
    st.out.info(
        f"{verb} {len(report.lists)} lists to {report.out}; hashed {report.hashed} files "
        f"({format_size(report.bytes_hashed)}, {format_size(int(rate))}/s), "
        f"reused {report.reused} hashes"
    )
    st.out.finish(
        {
            "out": str(report.out),
            "lists": [
                {"name": i.name, "status": str(i.status), "version": i.version, "models": i.files}
                for i in report.lists
            ],
            "hashed": report.hashed,
            "reused": report.reused,
            "bytes_hashed": report.bytes_hashed,
            "seconds": round(report.seconds, 3),
            "dry_run": report.dry_run,
            "warnings": list(report.warnings),
        }
    )
