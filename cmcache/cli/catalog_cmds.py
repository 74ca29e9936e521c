"""``list``, ``search`` and ``show``: browse the catalog and each model's local state."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmcache.cache.store import ModelStore
from cmcache.catalog import Catalog, load_catalog
from cmcache.cli.app import app, state
from cmcache.errors import UsageError
from cmcache.manifest import Entry
from cmcache.sizes import format_size


def _catalog() -> Catalog:
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
        "state": local,
        "size": entry.size,
        "source": entry.source,
        "aliases": list(entry.aliases),
    }


def _states(store: ModelStore, entries: list[Entry]) -> dict[str, str]:
    """cached / partial / missing from the disk; cached and pinned shows as pinned."""
    from cmcache.cache.index import Index

    index_path = store.meta_dir / "index.sqlite3"
    pinned: set[tuple[str, str]] = set()
    if index_path.exists():
        index = Index(index_path)
        pinned = index.pinned()
        index.close()
    on_disk = store.states((e.folder, e.filename) for e in entries)
    states = {}
    for e in entries:
        local = on_disk[e.folder, e.filename]
        states[e.ref] = (
            "pinned" if local == "cached" and (e.folder, e.filename) in pinned else local
        )
    return states


def _render(entries: list[Entry], store: ModelStore, title: str) -> list[dict[str, Any]]:
    out = state().out
    states = _states(store, entries)
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


@app.command("list")
def list_models(
    folder: Annotated[str | None, typer.Option("--folder", help="Only this folder.")] = None,
    cached: Annotated[bool, typer.Option("--cached", help="Only models present locally.")] = False,
    missing: Annotated[bool, typer.Option("--missing", help="Only models not present.")] = False,
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
) -> None:
    """List catalog models with their local state."""
    if cached and missing:
        raise UsageError("--cached and --missing exclude each other")
    st = state()
    store = ModelStore(st.settings().cache.root)
    entries = _catalog().unique_entries()
    if folder:
        entries = [e for e in entries if e.folder == folder]
    if source:
        entries = [e for e in entries if e.source == source]
    if cached or missing:
        want = {"cached", "pinned"} if cached else {"missing", "partial"}
        states = _states(store, entries)
        entries = [e for e in entries if states[e.ref] in want]
    rows = _render(entries, store, title=f"{len(entries)} models")
    st.out.finish({"models": rows})


@app.command()
def search(query: Annotated[str, typer.Argument(help="Words to look for.")]) -> None:
    """Find catalog models by name, alias, tag or description."""
    st = state()
    store = ModelStore(st.settings().cache.root)
    hits = _catalog().search(query)
    rows = _render(hits, store, title=f"{len(hits)} matches for {query!r}")
    if not hits:
        st.out.info(f"no model matches {query!r}")
    st.out.finish({"models": rows})


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="folder/filename, alias, name or filename.")],
) -> None:
    """Show one model and its local state."""
    st = state()
    store = ModelStore(st.settings().cache.root)
    entry = _catalog().resolve(ref)
    path = store.final_path(entry.folder, entry.filename)
    data = {
        **_row(entry, _states(store, [entry])[entry.ref]),
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
        ("state", data["state"]),
        ("path", str(path)),
        ("size", _size_text(entry)),
        ("sha256", entry.sha256 or "(none: verified by the origin's hash or size)"),
        ("source", f"{entry.source} / {entry.list_name}"),
        ("aliases", ", ".join(entry.aliases)),
        ("tags", ", ".join(entry.tags)),
        ("url", "\n     ".join(entry.urls)),
        ("about", entry.description),
    ):
        if value:
            st.out.line(f"{label + ':':9}{value}")
    st.out.finish(data)
