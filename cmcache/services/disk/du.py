"""`du`: the bytes under root by folder and by state, against the budget and the free space.

One walk, one stat per file, no hashing. Every inode counts once, in the strongest state any
of its names has (pinned, then managed, then unmanaged) and under the folder of that name.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.adapters.storage.model_store import CACHE_DIR, ModelStore
from cmcache.adapters.storage.tree import walk
from cmcache.core.comfyui import load_extra_paths, modern_folder
from cmcache.core.errors import UsageError
from cmcache.core.states import DiskState
from cmcache.services.cache.store import existing_index
from cmcache.services.disk.survey import look
from cmcache.services.download.partials import CONTROL

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cmcache.adapters.storage.tree import Found
    from cmcache.core.settings.model import Settings

_RANK = {DiskState.UNMANAGED: 0, DiskState.MANAGED: 1, DiskState.PINNED: 2}
Inode = tuple[int, int]


@dataclass(frozen=True)
class DiskUsage:
    """Bytes by state and by folder under one root."""

    root: Path
    states: dict[DiskState, int]
    folders: dict[str, int]
    budget: int | None
    free: int

    @property
    def total(self) -> int:
        """Bytes under root (external ones live elsewhere and are not part of it)."""
        return sum(b for s, b in self.states.items() if s != DiskState.EXTERNAL)

    @property
    def managed(self) -> int:
        """What the budget counts: managed and pinned bytes."""
        return self.states[DiskState.MANAGED] + self.states[DiskState.PINNED]


def disk_usage(settings: Settings, folder: str | None = None) -> DiskUsage:
    """Where the bytes under root are (``folder``: only that model folder, under its current
    and its legacy name).

    Raises:
        UsageError: ``folder`` names no folder under root.
    """
    store = ModelStore(settings.cache.root)
    extra = load_extra_paths(settings.comfyui.yaml_files).folders  # not the catalog: du is quick
    wanted = None if folder is None else _folders_named(store.root, folder, set(extra))
    index = existing_index(settings)
    try:
        survey = look(store, index)
        jobs = index.jobs() if index is not None and folder is not None else []
    finally:
        if index is not None:
            index.close()
    state_of: dict[Inode, DiskState] = {}
    folder_of: dict[Inode, str] = {}
    size_of: dict[Inode, int] = {}
    for name in survey.names:  # runs over every file: plain locals, no repeated lookups
        f = name.found
        inode, state, where = (f.dev, f.ino), name.state, name.folder
        size_of[inode] = f.size
        had = state_of.get(inode)
        stronger = had is None or _RANK[state] > _RANK[had]
        if stronger:
            state_of[inode] = state
        if (wanted is None and stronger) or (
            wanted is not None and where in wanted and inode not in folder_of
        ):
            folder_of[inode] = where
    states = dict.fromkeys(DiskState, 0)
    folders: dict[str, int] = {}
    for inode, where in folder_of.items():
        states[state_of[inode]] += size_of[inode]
        folders[where] = folders.get(where, 0) + size_of[inode]
    staged = survey.staged
    if folder is not None:  # a staging file belongs to the folder of its job
        mine = {Path(j.staging).name for j in jobs if modern_folder(j.folder) == _modern(folder)}
        staged = tuple(f for f in staged if f.rel.removesuffix(CONTROL) in mine)
    states[DiskState.PARTIAL] = _once(staged, set())
    states[DiskState.EXTERNAL] = _external(extra, store.root, folder, set(size_of))
    budget = settings.cache.max_size
    return DiskUsage(store.root, states, dict(sorted(folders.items())), budget, free_space(store))


def free_space(store: ModelStore) -> int:
    """Free bytes on root's filesystem (on its nearest existing parent before it exists)."""
    at = store.root
    while not at.exists() and at != at.parent:
        at = at.parent
    return shutil.disk_usage(at).free


def _modern(folder: str) -> str:
    return modern_folder(folder.strip("/"))


def _folders_named(root: Path, folder: str, external: set[str]) -> set[str]:
    """The folders under root that hold ``folder``'s models (``clip`` beside ``text_encoders``).

    Raises:
        UsageError: ``folder`` is not a folder name, or no such folder is under root or among
            the ``external`` ones (extra_model_paths).
    """
    name = folder.strip("/")
    if not name or "/" in name or "\\" in name or name in (".", "..", CACHE_DIR):
        raise UsageError(f"--folder {folder!r}: expected one model folder name, e.g. loras")
    try:
        present = {e.name for e in os.scandir(root) if e.is_dir() and e.name != CACHE_DIR}
    except OSError:
        present = set()
    found = {d for d in present if modern_folder(d) == modern_folder(name)}
    if not found and modern_folder(name) not in external:
        listed = ", ".join(sorted(present)) or "none"
        raise UsageError(
            f"--folder {folder}: no such folder under {root}", hint=f"folders there: {listed}"
        )
    return found


def _once(files: Iterable[Found], seen: set[Inode]) -> int:
    """Bytes of ``files``, each inode once (and none already in ``seen``)."""
    total = 0
    for f in files:
        if f.inode not in seen:
            seen.add(f.inode)
            total += f.size
    return total


def _external(
    extra: dict[str, list[Path]], root: Path, folder: str | None, seen: set[Inode]
) -> int:
    """Bytes in the extra_model_paths folders outside root (those inside are counted there)."""
    real_root = os.path.realpath(root)
    total = 0
    for name, directories in extra.items():
        if folder is not None and name != _modern(folder):
            continue
        for directory in directories:
            real = os.path.realpath(directory)
            if os.path.commonpath([real_root, real]) == real_root:
                continue
            total += _once(walk(Path(real)), seen)
    return total
