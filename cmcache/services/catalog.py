"""Load the catalog: every synced list of the configured sources, then the built-in one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.adapters.storage.manifest_store import ManifestStore
from cmcache.adapters.storage.model_store import ModelStore
from cmcache.core.catalog import Catalog
from cmcache.core.comfyui import ExtraPaths, load_extra_paths
from cmcache.core.errors import ManifestError
from cmcache.core.manifest.formats import parse_manifest
from cmcache.core.states import LocalState

if TYPE_CHECKING:
    from cmcache.core.manifest.entry import Entry
    from cmcache.core.settings.model import Settings

BUILTIN_SOURCE = "builtin"
DATA_DIR = Path(__file__).parent.parent / "data"


def builtin_bytes() -> bytes:
    """The list shipped inside cmcache."""
    # A plain path, not importlib.resources: this runs on every no-op `path` call.
    return (DATA_DIR / "builtin.json").read_bytes()


def load_catalog(settings: Settings) -> Catalog:
    """Read every synced list of the configured sources, then the built-in one."""
    store = ManifestStore(settings.paths.manifests_dir)
    entries: list[Entry] = []
    warnings: list[str] = []
    for source in settings.sources:
        for name, record in store.records(source.name).items():
            saved = store.read_entries(source.name, name, record.md5)
            if saved is not None:
                entries.extend(saved)
                continue
            data = store.read(source.name, name)  # stored by an older cmcache: parse again
            if data is None:
                warnings.append(f"list {name!r} of source {source.name!r} is missing; run sync")
                continue
            try:
                parsed = parse_manifest(data, list_name=name, fmt=record.format, source=source.name)
            except ManifestError as exc:
                warnings.append(exc.message)
                continue
            entries.extend(parsed.entries)
    if settings.builtin_catalog:
        parsed = parse_manifest(builtin_bytes(), list_name=BUILTIN_SOURCE, source=BUILTIN_SOURCE)
        entries.extend(parsed.entries)
    return Catalog(tuple(entries), tuple(warnings))


def local_states(settings: Settings, entries: list[Entry]) -> dict[str, LocalState]:
    """cached / partial / missing from the disk; cached and pinned shows as pinned."""
    from cmcache.services.cache import existing_index

    store = ModelStore(settings.cache.root)
    pinned: set[tuple[str, str]] = set()
    index = existing_index(settings)
    if index is not None:
        pinned = index.pinned()
        index.close()
    on_disk = store.states((e.folder, e.filename) for e in entries)
    extra = extra_paths(settings)
    states = {}
    for e in entries:
        local = on_disk[e.folder, e.filename]
        if local == LocalState.MISSING and extra.folders and extra.find(e.folder, e.filename):
            local = LocalState.EXTERNAL
        cached_pinned = local == LocalState.CACHED and (e.folder, e.filename) in pinned
        states[e.ref] = LocalState.PINNED if cached_pinned else local
    return states


def final_path(settings: Settings, entry: Entry) -> Path:
    """Where a catalog entry lives under root."""
    return ModelStore(settings.cache.root).final_path(entry.folder, entry.filename)


def extra_paths(settings: Settings) -> ExtraPaths:
    """The folders ComfyUI's extra_model_paths.yaml files add (none without ComfyUI)."""
    return load_extra_paths(settings.comfyui.yaml_files)
