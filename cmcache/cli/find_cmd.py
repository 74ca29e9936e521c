"""``find``: look on Civitai for a model file a workflow names."""

from __future__ import annotations

from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.cli.output import error_item
from cmcache.core.errors import ExitCode, UsageError
from cmcache.core.sizes import format_size


@app.command()
def find(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The exact file name to look for.")],
    sha256: Annotated[
        str | None,
        typer.Option("--hash", metavar="SHA256", help="Its sha256, when known (asked first)."),
    ] = None,
) -> None:
    """Find Civitai files named exactly NAME: page, version, size, sha256 and the ref to pull."""
    from cmcache.core.names import SHA256_RE
    from cmcache.services.sources.find import find_name

    if sha256 is not None and not SHA256_RE.match(sha256):
        raise UsageError(f"--hash must be 64 hex digits, got {sha256!r}")
    st = state()
    found = find_name(st.settings(), name, sha256)
    rows = [
        {
            "ref": c.ref,
            "filename": c.filename,
            "model": c.model,
            "version": c.version,
            "type": c.model_type,
            "size": c.size,
            "sha256": c.sha256,
            "page": c.page,
        }
        for c in found
    ]
    st.out.table(
        ["ref", "model", "version", "size", "sha256", "page"],
        [
            [c.ref, c.model, c.version, f"~{format_size(c.size)}", (c.sha256 or "")[:16], c.page]
            for c in found
        ],
        title=f"{len(rows)} Civitai files named {name!r}",
    )
    if not rows:
        message = f"Civitai has no file named {name!r}"
        st.out.error(message, "check the spelling, or give its sha256 with --hash")
        st.out.finish(
            {"name": name, "candidates": []},
            errors=[error_item(name, ExitCode.MANIFEST, message)],
            exit_code=ExitCode.MANIFEST,
        )
        return
    st.out.finish({"name": name, "candidates": rows})
