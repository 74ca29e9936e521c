"""Load the catalog: every synced list of the configured sources, then the built-in one."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.adapters.storage.manifest_store import ManifestStore
from cmcache.adapters.storage.model_store import ModelStore
from cmcache.adapters.storage.own_lists import OwnList
from cmcache.core.catalog import Catalog
from cmcache.core.comfyui import ExtraPaths, load_extra_paths
from cmcache.core.errors import ManifestError
from cmcache.core.manifest.formats import parse_manifest
from cmcache.core.states import LocalState
from cmcache.services.comfyui.workflow import WORKFLOW_SOURCE

if TYPE_CHECKING:
    from cmcache.adapters.storage.index import FileRecord
    from cmcache.core.manifest.entry import Entry
    from cmcache.core.settings.model import Settings

BUILTIN_SOURCE = "builtin"
DATA_DIR = Path(__file__).parents[2] / "data"  # cmcache/data


def builtin_bytes() -> bytes:
    """The list shipped inside cmcache."""
    # A plain path, not importlib.resources: this runs on every no-op `path` call.
    return (DATA_DIR / "builtin.json").read_bytes()


def load_catalog(settings: Settings) -> Catalog:
    """The local list (what links and refs pulled), every synced list of the configured
    sources, then the built-in one."""
    from cmcache.adapters.storage.local_list import LocalList

    store = ManifestStore(settings.paths.manifests_dir)
    local, problem = LocalList(settings.paths.state_dir / "local.json").entries()
    entries: list[Entry] = local
    warnings: list[str] = [problem] if problem else []
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
            with contextlib.suppress(OSError):  # next time from the saved entries (best effort)
                store.save_entries(source.name, name, record.md5, parsed.entries)
    if settings.builtin_catalog:
        parsed = parse_manifest(builtin_bytes(), list_name=BUILTIN_SOURCE, source=BUILTIN_SOURCE)
        entries.extend(parsed.entries)
    entries.extend(_workflow_entries(settings, warnings))
    return Catalog(tuple(entries), tuple(warnings))


def workflow_list(settings: Settings) -> OwnList:
    """The list ``workflow``: models that workflows opened in ComfyUI declared."""
    return OwnList(settings.paths.state_dir, WORKFLOW_SOURCE)


def _workflow_entries(settings: Settings, warnings: list[str]) -> list[Entry]:
    """The list ``workflow``, last (any catalog's own entry wins), without a model whose host
    is no longer allowed."""
    data = workflow_list(settings).read()
    if not data:
        return []
    try:
        parsed = parse_manifest(data, list_name=WORKFLOW_SOURCE, source=WORKFLOW_SOURCE)
    except ManifestError as exc:
        warnings.append(exc.message)
        return []
    policy = settings.download_policy()
    return [e for e in parsed.entries if policy.refusal(e.urls[0]) is None]


def local_states(settings: Settings, entries: list[Entry]) -> dict[str, LocalState]:
    """cached / pinned / partial / missing / external / unverified, without hashing.

    A file at a model's path is ``cached`` only when cmcache manages it, unchanged since it
    was verified and of the bytes the manifest names; any other file there is ``unverified``
    (``scan`` or ``pull`` hashes it, and adopts or refuses it).
    """
    from cmcache.services.cache.store import existing_index
    from cmcache.services.download.placement import unchanged

    store = ModelStore(settings.cache.root)
    pinned: set[tuple[str, str]] = set()
    records: dict[tuple[str, str], FileRecord] = {}
    index = existing_index(settings)
    if index is not None:
        pinned = index.pinned()
        records = {(r.folder, r.filename): r for r in index.files()}
        index.close()
    on_disk = store.states((e.folder, e.filename) for e in entries)
    extra = extra_paths(settings)
    states = {}
    for e in entries:
        where = (e.folder, e.filename)
        local = on_disk[where]
        if local == LocalState.MISSING and extra.folders and extra.find(e.folder, e.filename):
            local = LocalState.EXTERNAL
        elif local == LocalState.CACHED:
            record = records.get(where)
            path = store.root / store.disk_folder(e.folder) / e.filename
            if (
                record is None
                or (e.sha256 is not None and record.sha256 != e.sha256)
                or not unchanged(record, path)
            ):
                local = LocalState.UNVERIFIED
            elif where in pinned:
                local = LocalState.PINNED
        states[e.ref] = local
    return states


def final_path(settings: Settings, entry: Entry) -> Path:
    """Where a catalog entry lives under root."""
    return ModelStore(settings.cache.root).final_path(entry.folder, entry.filename)


def extra_paths(settings: Settings) -> ExtraPaths:
    """The folders ComfyUI's extra_model_paths.yaml files add (none without ComfyUI)."""
    return load_extra_paths(settings.comfyui.yaml_files)
