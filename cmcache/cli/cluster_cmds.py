"""``serve`` and ``cluster status``: several machines sharing one cache."""

from __future__ import annotations

import datetime
import time
from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.cli.help import HumanTyper
from cmcache.core.sizes import format_size

cluster_app = HumanTyper(help="Several machines sharing one cache (Redis).", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@app.command()
def serve(
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen", metavar="HOST:PORT", help="Where to listen (default: [cluster] serve)."
        ),
    ] = None,
) -> None:
    """Serve this node's verified models to its peers, and heartbeat, until stopped."""
    from cmcache.services.cluster.serve import serve as run_serve

    st = state()
    st.out.info("serving this node's models to its peers; Ctrl-C stops")
    run_serve(st.settings(), listen, st.out.warn)


@cluster_app.command("status")
def cluster_status() -> None:
    """Nodes alive, what each holds, what is being fetched where, origin budget left."""
    from cmcache.services.cluster.node import cluster_status as read_status

    st = state()
    status = read_status(st.settings(), st.out.warn)
    rows = [
        [
            name,
            str(info["url"]),
            str(info["models"]),
            format_size(int(str(info["bytes"]))),
            f"{time.time() - float(str(info['seen'])):.0f}s ago",
        ]
        for name, info in sorted(status.nodes.items())
    ]
    st.out.table(["node", "url", "models", "bytes", "heartbeat"], rows, title=f"{len(rows)} nodes")
    for ref, node in sorted(status.fetching.items()):
        st.out.line(f"fetching {ref} from its origin on {node}")
    for who, left in sorted(status.budget.items()):
        st.out.line(f"origin budget left ({who}): {left}")
    st.out.finish(
        {
            "nodes": status.nodes,
            "holders": status.holders,
            "fetching": status.fetching,
            "origin_budget": status.budget,
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
    )
