"""One look at a model root: every file once, and what the index and the hash cache say of it.

`du`, `report` and `dedupe` all start here: one walk, one stat per file, no hashing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from cmcache.adapters.storage.model_store import CACHE_DIR
from cmcache.adapters.storage.tree import Found, walk
from cmcache.core.states import DiskState

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.adapters.storage.hash_cache import HashCache
    from cmcache.adapters.storage.index import FileRecord, Index
    from cmcache.adapters.storage.model_store import ModelStore


class Name(NamedTuple):
    """One file under root (outside ``.cmcache``) and what cmcache knows of it (a tuple:
    there is one per file, and roots hold tens of thousands)."""

    found: Found
    record: FileRecord | None  # its managed record, while the bytes are the verified ones
    pinned: bool
    sha256: str | None  # the record's, else the hash cache's, else that of a managed link

    @property
    def rel(self) -> str:
        """Path relative to root, '/'-separated."""
        return self.found.rel

    @property
    def folder(self) -> str:
        """Its folder under root (``.`` for a file directly in root)."""
        head, sep, _ = self.found.rel.partition("/")
        return head if sep else "."

    @property
    def state(self) -> DiskState:
        """Pinned, managed or unmanaged."""
        if self.record is None:
            return _UNMANAGED
        return _PINNED if self.pinned else _MANAGED


_UNMANAGED, _MANAGED, _PINNED = DiskState.UNMANAGED, DiskState.MANAGED, DiskState.PINNED


@dataclass(frozen=True)
class Survey:
    """The root as it is now."""

    root: Path
    names: tuple[Name, ...]
    staged: tuple[Found, ...]  # <root>/.cmcache/staging, relative to that folder
    # Records whose file `dedupe` made a link of other managed bytes but did not record
    # (it was stopped): (record, the file now). Their names count as managed.
    relinked: tuple[tuple[FileRecord, Found], ...] = ()


def look(store: ModelStore, index: Index | None, hashes: HashCache | None = None) -> Survey:
    """Walk root once and tell managed, pinned and unmanaged files apart (no hashing).

    A managed file is trusted while its size, mtime and inode match the index, as everywhere
    in cmcache; a file that changed since is unmanaged.
    """
    records = index.files() if index is not None else []
    pins = index.pinned() if index is not None else set()
    by_rel = {f"{store.disk_folder(r.folder)}/{r.filename}": r for r in records}
    files = walk(store.root, skip={CACHE_DIR})
    verified: dict[tuple[int, int, int], str | None] = {}  # fingerprint → sha256
    for f in files:
        r = by_rel.get(f.rel)
        if r is not None and (r.size, r.mtime_ns, r.inode) == f.fingerprint:
            verified[f.fingerprint] = r.sha256
    by_inode: dict[tuple[int, int], str] = {}
    names: list[Name] = []
    relinked: list[tuple[FileRecord, Found]] = []
    for f in files:
        r = by_rel.get(f.rel)
        if r is not None and (r.size, r.mtime_ns, r.inode) != f.fingerprint:
            if r.sha256 is not None and verified.get(f.fingerprint) == r.sha256:
                relinked.append((r, f))
            else:
                r = None  # changed since verified: no longer cmcache's
        sha = r.sha256 if r is not None else None
        if sha is not None:
            by_inode[f.inode] = sha
        pinned = r is not None and (r.folder, r.filename) in pins
        names.append(Name(f, r, pinned, sha))
    # Unmanaged names: another name of managed bytes, else a hash remembered for them.
    for at, name in enumerate(names):
        if name.sha256 is None:
            f = name.found
            sha = by_inode.get(f.inode) or (hashes.get(f.rel, f.fingerprint) if hashes else None)
            if sha is not None:
                names[at] = Name(f, None, False, sha)
    staged = walk(store.staging_dir)
    return Survey(store.root, tuple(names), tuple(staged), tuple(relinked))
