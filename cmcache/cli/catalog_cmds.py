"""``list``, ``search`` and ``show``: browse the catalog and each model's local state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.core.errors import UsageError
from cmcache.core.manifest.entry import Entry
from cmcache.core.sizes import format_size
from cmcache.core.states import LocalState

if TYPE_CHECKING:
    from cmcache.core.catalog import Catalog


def _catalog() -> Catalog:
    from cmcache.services.sources.catalog import load_catalog

    st = state()
    catalog = load_catalog(st.settings())
    for warning in catalog.warnings:
        st.out.warn(warning)
    return catalog


def _size_text(entry: Entry) -> str:
    text = format_size(entry.size)
    return text if entry.size_exact or entry.size is None else f"~{text}"


def _row(entry: Entry, local: str) -> dict[str, Any]:
    return {
        "ref": entry.ref,
        "folder": entry.folder,
        "filename": entry.filename,
        "state": str(local),
        "size": entry.size,
        "source": entry.source,
        "aliases": list(entry.aliases),
    }


def _render(
    entries: list[Entry], title: str, states: dict[str, LocalState] | None = None
) -> list[dict[str, Any]]:
    from cmcache.services.sources.catalog import local_states

    st = state()
    out = st.out
    states = states if states is not None else local_states(st.settings(), entries)
    rows = [_row(e, states[e.ref]) for e in entries]
    if out.json_mode:
        return rows
    out.table(
        ["ref", "state", "size", "source", "aliases"],
        [
            [r["ref"], r["state"], _size_text(e), r["source"], ",".join(r["aliases"])]
            for r, e in zip(rows, entries, strict=True)
        ],
        title=title,
    )
    return rows


# What show says of a file at the model's path that cmcache has not verified.
UNVERIFIED = " (not verified as this model: `scan` checks it, `pull --force` replaces it)"


@app.command("list")
def list_models(
    folder: Annotated[
        str | None, typer.Option("--folder", metavar="FOLDER", help="Only this folder.")
    ] = None,
    cached: Annotated[bool, typer.Option("--cached", help="Only present, verified ones.")] = False,
    missing: Annotated[
        bool, typer.Option("--missing", help="Only the rest: missing, partial, unverified.")
    ] = False,
    source: Annotated[
        str | None, typer.Option("--source", metavar="NAME", help="Only this source.")
    ] = None,
) -> None:
    """List catalog models with their local state."""
    if cached and missing:
        raise UsageError("--cached and --missing exclude each other")
    st = state()
    entries = _catalog().unique_entries()
    if folder:
        entries = [e for e in entries if e.folder == folder]
    if source:
        entries = [e for e in entries if e.source == source]
    states = None
    if cached or missing:
        from cmcache.services.sources.catalog import local_states

        present = {LocalState.CACHED, LocalState.PINNED, LocalState.EXTERNAL}
        states = local_states(st.settings(), entries)  # one look at the disk, used twice
        entries = [e for e in entries if (states[e.ref] in present) == cached]
    rows = _render(entries, title=f"{len(entries)} models", states=states)
    st.out.finish({"models": rows})


@app.command()
def search(
    words: Annotated[
        list[str], typer.Argument(metavar="WORD…", help="Words to look for (all must match).")
    ],
) -> None:
    """Find catalog models by name, alias, tag or description."""
    query = " ".join(words)
    st = state()
    hits = _catalog().search(query)
    rows = _render(hits, title=f"{len(hits)} matches for {query!r}")
    if not hits:
        st.out.info(f"no model matches {query!r}")
    st.out.finish({"models": rows})


@app.command()
def show(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF", help="folder/filename, alias, name, filename, link or hf:/civitai: ref."
        ),
    ],
    folder: Annotated[
        str | None,
        typer.Option("--folder", metavar="FOLDER", help="Folder for a link or an hf: ref."),
    ] = None,
) -> None:
    """Show one model and its local state."""
    from cmcache.core.sourcerefs import looks_like_source_ref
    from cmcache.services.pull.run import resolve_refs
    from cmcache.services.sources.catalog import final_path, local_states

    st = state()
    if looks_like_source_ref(ref):  # remembered, else asked of its source
        entry = resolve_refs(st.settings(), [ref], folder, on_note=st.out.warn)[0].entry
    else:
        entry = _catalog().resolve(ref)
    path = final_path(st.settings(), entry)
    local = local_states(st.settings(), [entry])[entry.ref]
    data = {
        **_row(entry, local),
        "name": entry.name,
        "path": str(path),
        "urls": list(entry.urls),
        "sha256": entry.sha256,
        "size_exact": entry.size_exact,
        "tags": list(entry.tags),
        "description": entry.description,
        "list": entry.list_name,
    }
    for label, value in (
        ("ref", entry.ref),
        ("name", entry.name),
        ("state", f"{local}{UNVERIFIED if local == LocalState.UNVERIFIED else ''}"),
        ("path", str(path)),
        ("size", _size_text(entry)),
        ("sha256", entry.sha256 or "(none listed: a download is checked by the origin's hash)"),
        ("source", f"{entry.source} / {entry.list_name}"),
        ("aliases", ", ".join(entry.aliases)),
        ("tags", ", ".join(entry.tags)),
        ("url", "\n     ".join(entry.urls)),
        ("about", entry.description),
    ):
        if value:
            st.out.line(f"{label + ':':9}{value}")
    st.out.finish(data)
