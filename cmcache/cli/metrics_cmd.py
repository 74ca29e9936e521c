"""``metrics``: Prometheus text format on stdout, or into node_exporter's textfile folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cmcache.cli.app import app, state


@app.command()
def metrics(
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile", metavar="FILE", help="Write here atomically (node_exporter textfile dir)."
        ),
    ] = None,
) -> None:
    """Print cache, download, prune and sync metrics in Prometheus text format."""
    from cmcache.services.metrics import render_metrics

    st = state()
    text = render_metrics(st.settings(), textfile)
    if textfile is None and not st.out.json_mode:
        sys.stdout.write(text.decode())
    st.out.finish({"textfile": str(textfile) if textfile else None, "metrics": text.decode()})
