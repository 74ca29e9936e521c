"""One look at a model root: every file once, and what the index and the hash cache say of it.

`du`, `report` and `dedupe` all start here: one walk, one stat per file, no hashing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from cmcache.adapters.storage.hashing import fingerprint
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
    verified: dict[tuple[int, int, int], str | None] = {}  # fingerprint → sha256
    by_inode: dict[tuple[int, int], str] = {}
    names: list[Name] = []
    changed: list[tuple[int, FileRecord]] = []  # (at, record) whose file is not as recorded
    repository = _Repositories(store.root, by_rel)
    for f in walk(store.root, skip={CACHE_DIR}):  # one pass; this runs over every file
        r = by_rel.get(f.rel)
        if r is None and (r := repository.holding(f.rel)) is not None:
            # A file of a whole repository (one model): managed while the folder is unchanged;
            # the record's digest is the folder's, not this file's sha256.
            names.append(Name(f, r, (r.folder, r.filename) in pins, None))
            continue
        if r is not None and r.failed_check:  # still cmcache's, but its hash vouches for nothing
            names.append(Name(f, r, (r.folder, r.filename) in pins, None))
            continue
        if r is not None and (r.size, r.mtime_ns, r.inode) != (f.size, f.mtime_ns, f.ino):
            changed.append((len(names), r))
            r = None
        if r is not None:
            verified[f.size, f.mtime_ns, f.ino] = sha = r.sha256
            names.append(Name(f, r, (r.folder, r.filename) in pins, sha))
        else:
            sha = hashes.get(f.rel, (f.size, f.mtime_ns, f.ino)) if hashes is not None else None
            names.append(Name(f, None, False, sha))
        if sha is not None:
            by_inode.setdefault((f.dev, f.ino), sha)
    relinked: list[tuple[FileRecord, Found]] = []
    for at, r in changed:
        f = names[at].found
        if r.sha256 is not None and verified.get((f.size, f.mtime_ns, f.ino)) == r.sha256:
            relinked.append((r, f))  # else: changed since verified, no longer cmcache's
            names[at] = Name(f, r, (r.folder, r.filename) in pins, r.sha256)
    # An unmanaged name with no hash of its own shares one with another name of its inode.
    for at, name in enumerate(names):
        if name.record is None and name.sha256 is None and name.found.inode in by_inode:
            names[at] = name._replace(sha256=by_inode[name.found.dev, name.found.ino])
    staged = walk(store.staging_dir)
    return Survey(store.root, tuple(names), tuple(staged), tuple(relinked))


class _Repositories:
    """Managed records that are folders (a whole Hugging Face repository is one model)."""

    def __init__(self, root: Path, by_rel: dict[str, FileRecord]) -> None:
        self.root = root
        self.by_rel = by_rel
        self._trusted: dict[str, bool] = {}

    def holding(self, rel: str) -> FileRecord | None:
        """The repository record whose unchanged folder holds ``rel``, if any."""
        head = rel
        while "/" in head:
            head = head.rsplit("/", 1)[0]
            record = self.by_rel.get(head)
            if record is not None:
                return record if self._unchanged(head, record) else None
        return None

    def _unchanged(self, rel: str, record: FileRecord) -> bool:
        if rel not in self._trusted:
            try:  # the folder's fingerprint walks it: once per repository
                now = fingerprint(self.root / rel)
            except OSError:
                now = (-1, -1, -1)
            self._trusted[rel] = now == (record.size, record.mtime_ns, record.inode)
        return self._trusted[rel]
