"""Prune: a pure plan (least recently used first, protected kept), then a crash-safe removal."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.cache.locks import FileLock
from cmcache.cache.verify import fingerprint
from cmcache.fsutil import remove_quietly

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from cmcache.cache.index import FileRecord, Index
    from cmcache.cache.store import ModelStore

DAY = 86400.0


@dataclass(frozen=True)
class Candidate:
    """A managed file as the planner sees it."""

    folder: str
    filename: str
    size: int
    last_used: float
    pinned: bool = False
    in_flight: bool = False

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


@dataclass(frozen=True)
class PrunePlan:
    """What to remove, in order, and where that leaves the cache."""

    remove: tuple[Candidate, ...]
    managed_size: int
    resulting_size: int
    reached: bool
    protected: int  # files kept by pins, recent use or downloads in flight

    @property
    def freed(self) -> int:
        """Bytes the plan frees."""
        return self.managed_size - self.resulting_size


def protected(c: Candidate, now: float, keep_days: float) -> bool:
    """Pinned, in flight, or used within ``keep_days``."""
    return c.pinned or c.in_flight or (now - c.last_used) < keep_days * DAY


def plan_prune(
    candidates: Iterable[Candidate],
    *,
    now: float,
    keep_days: float,
    max_size: int | None = None,
    min_free: int | None = None,
    free_bytes: int = 0,
) -> PrunePlan:
    """Evict unprotected files, least recently used first (ties: larger first, then by name).

    With ``max_size`` and/or ``min_free``, stop as soon as both targets are met; with neither,
    evict every unprotected file.
    """
    files = list(candidates)
    total = sum(c.size for c in files)
    evictable = sorted(
        (c for c in files if not protected(c, now, keep_days)),
        key=lambda c: (c.last_used, -c.size, c.ref),
    )
    keep_count = len(files) - len(evictable)
    everything = max_size is None and min_free is None

    def satisfied(size: int, free: int) -> bool:
        if everything:
            return False
        return (max_size is None or size <= max_size) and (min_free is None or free >= min_free)

    removed: list[Candidate] = []
    size, free = total, free_bytes
    for candidate in evictable:
        if satisfied(size, free):
            break
        removed.append(candidate)
        size -= candidate.size
        free += candidate.size
    reached = everything or satisfied(size, free)
    return PrunePlan(tuple(removed), total, size, reached, keep_count)


def candidates(index: Index) -> list[Candidate]:
    """Managed files with their protection facts (in flight: a download is queued for it).

    A download that holds the target's lock but is not queued yet is caught by ``execute``,
    which takes each target's lock before removing anything.
    """
    return [
        Candidate(m.folder, m.filename, m.size, m.last_used, bool(m.pinned), bool(m.queued))
        for m in index.managed()
    ]


def reconcile(index: Index, store: ModelStore) -> list[FileRecord]:
    """Finish removals a crash interrupted and forget records whose file is gone."""
    gone = []
    for record in index.removing():
        with contextlib.suppress(OSError):
            _remove_model(store, record.folder, record.filename)
        index.forget_file(record.folder, record.filename)
        gone.append(record)
    records = index.files()
    on_disk = store.states((r.folder, r.filename) for r in records)  # one stat each
    for record in records:
        if on_disk[record.folder, record.filename] != "cached":
            index.forget_file(record.folder, record.filename)
            gone.append(record)
    return gone


def execute(
    plan: PrunePlan, index: Index, store: ModelStore, on_skip: Callable[[str], None] | None = None
) -> list[Candidate]:
    """Remove the planned files: index marked first, then unlink, then the record dropped."""
    removed = []
    for c in plan.remove:
        lock = FileLock(store.lock_path(c.folder, c.filename))
        if not lock.try_acquire():
            if on_skip:
                on_skip(f"{c.ref}: a download of it is under way; kept")
            continue
        try:
            path = store.final_path(c.folder, c.filename)
            record = index.get_file(c.folder, c.filename)
            if record is None:
                continue
            if path.exists() and fingerprint(path) != (record.size, record.mtime_ns, record.inode):
                # Someone changed the file since cmcache placed it: it is theirs now.
                index.forget_file(c.folder, c.filename)
                if on_skip:
                    on_skip(f"{c.ref}: changed since it was downloaded; left alone and unmanaged")
                continue
            index.mark_removing(c.folder, c.filename)
            _remove_model(store, c.folder, c.filename)
            index.forget_file(c.folder, c.filename)
            removed.append(c)
        finally:
            lock.release()
    return removed


def _remove_model(store: ModelStore, folder: str, filename: str) -> None:
    """Unlink a model file and the empty subfolders it leaves (never the model folder)."""
    path = store.final_path(folder, filename)
    remove_quietly(path)
    _remove_empty_parents(path.parent, store.root / folder)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove empty subfolders a removal left behind, up to (not including) the model folder."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
