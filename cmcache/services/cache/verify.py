"""Verify managed files against their hashes, and adopt files already under root (scan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.adapters.storage.model_store import CACHE_DIR
from cmcache.core.comfyui import modern_folder
from cmcache.core.errors import ManifestError, UnverifiedError
from cmcache.core.states import CheckStatus
from cmcache.services.cluster.node import withdraw_quietly
from cmcache.services.download.placement import Placement, hash_file, mismatch, placement_for
from cmcache.services.pull.run import resolve_targets
from cmcache.services.sources.catalog import load_catalog

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.catalog import Catalog
    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target
    from cmcache.services.cache.store import Cache


@dataclass(frozen=True)
class Checked:
    """The verdict on one managed file."""

    folder: str
    filename: str
    status: CheckStatus
    expected: str | None
    actual: str | None

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


def verify_files(
    placement: Placement,
    store: ModelStore,
    catalog: Catalog,
    refs: Iterable[tuple[str, str]] | None = None,
) -> list[Checked]:
    """Re-hash managed files: against the manifest's sha256, else the one recorded at download."""
    wanted = set(refs) if refs is not None else None
    results = []
    hashed: dict[tuple[int, int, int, int], tuple[str, int]] = {}  # hard links: read once
    for record in placement.index.files():
        key = (record.folder, record.filename)
        if wanted is not None and key not in wanted:
            continue
        entry = catalog.get(f"{record.folder}/{record.filename}")
        expected = (entry.sha256 if entry else None) or record.sha256
        try:
            path = store.final_path(record.folder, record.filename)
        except ManifestError:
            results.append(Checked(*key, CheckStatus.SKIPPED, expected, None))
            continue
        if not (path.is_file() or path.is_dir()):  # a folder: a whole repository
            results.append(Checked(*key, CheckStatus.MISSING, expected, None))
            continue
        st = path.stat()
        inode = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if inode not in hashed:
            hashed[inode] = hash_file(path)
        actual, size = hashed[inode]
        if mismatch(None, expected, size, actual) is not None:
            placement.index.mark_failed_check(*key)  # never served, never counted as present
            results.append(Checked(*key, CheckStatus.BAD, expected, actual))
            continue
        # A touched mtime is fine once the bytes are proven: record the file as it is now.
        placement.record(*key, path, actual, record.source, record.url, record.added)
        results.append(Checked(*key, CheckStatus.OK, expected, actual))
    return results


@dataclass(frozen=True)
class Scanned:
    """A file found under root that matches a catalog entry."""

    folder: str
    filename: str
    adopted: bool
    size: int
    reason: str = ""

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


def scan(placement: Placement, store: ModelStore, catalog: Catalog) -> list[Scanned]:
    """Adopt files at a catalog entry's path whose size and sha256 (when known) match."""
    found: list[Scanned] = []
    if not store.root.is_dir():
        return found
    for folder in sorted(p for p in store.root.iterdir() if p.is_dir() and p.name != CACHE_DIR):
        name = modern_folder(folder.name)
        if store.disk_folder(name) != folder.name:
            continue  # unet/ beside diffusion_models/: cmcache places into the latter
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            filename = path.relative_to(folder).as_posix()
            entry = catalog.get(f"{name}/{filename}")
            if entry is None or placement.index.get_file(name, filename) is not None:
                continue
            try:
                store.final_path(name, filename)  # what pull would refuse, scan must too
            except ManifestError as exc:
                found.append(Scanned(name, filename, False, 0, exc.message))
                continue
            size = path.stat().st_size
            try:
                want_size, want_sha = placement.identity(entry)
            except UnverifiedError as exc:
                found.append(Scanned(name, filename, False, size, exc.message))
                continue
            problem = mismatch(want_size, None, size, None)
            if problem is None:
                sha, size = hash_file(path)
                problem = mismatch(None, want_sha, size, sha)
            if problem is not None:
                found.append(Scanned(name, filename, False, size, problem))
                continue
            placement.record_entry(entry, path, sha)
            found.append(Scanned(name, filename, True, size))
    return found


def check_models(
    settings: Settings, cache: Cache, refs: list[str]
) -> tuple[list[Checked], list[Target]]:
    """Verify the named managed models (all when none are named); also the targets that a
    re-download can repair (bad or missing ones the catalog still lists)."""
    catalog = load_catalog(settings)
    keys = None
    if refs:
        keys = [
            (t.entry.folder, t.entry.filename) for t in resolve_targets(catalog, cache.store, refs)
        ]
    checked = verify_files(Placement(cache.index), cache.store, catalog, keys)
    failed = [c.ref for c in checked if c.status in (CheckStatus.BAD, CheckStatus.MISSING)]
    withdraw_quietly(settings, failed)  # peers must not fetch it from here any more
    bad = [ref for ref in failed if catalog.get(ref)]
    return checked, resolve_targets(catalog, cache.store, bad) if bad else []


def scan_root(settings: Settings, cache: Cache) -> list[Scanned]:
    """Adopt files under root that match this configuration's catalog."""
    return scan(placement_for(settings, cache.index), cache.store, load_catalog(settings))
