"""``forget``: drop models from the local list (what links and refs pulled)."""

from __future__ import annotations

from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.core.sizes import format_size


@app.command()
def forget(
    refs: Annotated[
        list[str],
        typer.Argument(
            metavar="REF…",
            help="Models of the local list: ref, file name, or the link or ref pulled with.",
        ),
    ],
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the files too (else they stay, unlisted).")
    ] = False,
) -> None:
    """Drop models pulled by a link or an hf:/civitai: ref from the local list."""
    from cmcache.services.sources.remembered import forget_models

    st = state()
    forgotten = forget_models(st.settings(), refs, delete=delete)
    for f in forgotten:
        if f.deleted:
            st.out.line(f"forgot {f.ref}, deleted {format_size(f.bytes)}")
        else:
            st.out.line(f"forgot {f.ref}")
        if f.note:
            st.out.warn(f.note)
    st.out.finish(
        {
            "forgotten": [
                {"ref": f.ref, "deleted": f.deleted, "bytes": f.bytes, "note": f.note}
                for f in forgotten
            ]
        }
    )
