"""Prune: plan (core.planning.prune), then remove crash-safely, each file under its lock."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import ManifestError
from cmcache.core.files import remove_quietly
from cmcache.core.planning.prune import (
    Candidate,
    PrunePlan,
    merge_links,
    plan_prune,
    protected,
)
from cmcache.core.states import LocalState
from cmcache.services.cache.predict import cost_order_for, read_forecast
from cmcache.services.cluster.node import withdraw_quietly
from cmcache.services.download.placement import trusted

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.adapters.storage.index import FileRecord, Index
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.settings.model import Settings
    from cmcache.services.cache.store import Cache

Note = Callable[[str], None]


def candidates(index: Index) -> list[Candidate]:
    """Managed files with their protection facts (in flight: a download is queued for it),
    hard links of one inode merged into one candidate (their bytes count once).

    A download that holds the target's lock but is not queued yet is caught by ``execute``,
    which takes each target's lock before removing anything.
    """
    return merge_links(
        Candidate(
            m.folder, m.filename, m.size, m.last_used, bool(m.pinned), bool(m.queued), m.inode
        )
        for m in index.managed()
    )


def reconcile(index: Index, store: ModelStore) -> list[FileRecord]:
    """Finish removals a crash interrupted, forget records whose file is gone, and record the
    links an interrupted `dedupe` made."""
    gone = []
    for record in index.removing():
        with contextlib.suppress(OSError):
            _remove_model(store, record.folder, record.filename)
        index.forget_file(record.folder, record.filename)
        gone.append(record)
    records = index.files()
    on_disk = store.states((r.folder, r.filename) for r in records)  # one stat each
    for record in records:
        if on_disk[record.folder, record.filename] != LocalState.CACHED:
            index.forget_file(record.folder, record.filename)
            gone.append(record)
        else:  # records a link `dedupe` made but could not record, so its bytes count once
            trusted(index, record, store.root / store.disk_folder(record.folder) / record.filename)
    return gone


def execute(
    remove: Iterable[Candidate],
    index: Index,
    store: ModelStore,
    *,
    keep_days: float,
    keep: Collection[str] = (),
    on_skip: Note | None = None,
) -> list[Candidate]:
    """Remove files (every name of each candidate): index marked first, then unlink, then the
    record dropped. Returns the names removed.

    Each file is re-checked under its lock right before it goes: a model that was used, pinned
    or queued since the plan was made (by ``path`` or ``pin`` in another process) stays, and
    so do the other names of its bytes.
    """
    skip = on_skip or (lambda _text: None)
    removed = []
    for candidate in remove:
        for c in candidate.names:
            if not _remove_one(c, index, store, keep_days, keep, skip):
                break  # its bytes stay: removing their other names would free nothing
            removed.append(c)
    return removed


def _remove_one(
    c: Candidate,
    index: Index,
    store: ModelStore,
    keep_days: float,
    keep: Collection[str],
    skip: Note,
) -> bool:
    """Remove one managed name under its lock, unless it must stay; whether it went (or was
    already gone from the index)."""
    try:
        path = store.final_path(c.folder, c.filename)
    except ManifestError as exc:
        skip(f"{c.ref}: {exc.message}; left alone")
        return False
    lock = FileLock(store.lock_path(c.folder, c.filename))
    if not lock.try_acquire():
        skip(f"{c.ref}: a download of it is under way; kept")
        return False
    try:
        now = index.managed_file(c.folder, c.filename)
        if now is None:
            return True
        fresh = Candidate(c.folder, c.filename, now.size, now.last_used, now.pinned, now.queued)
        if c.ref in keep or protected(fresh, time.time(), keep_days):
            skip(f"{c.ref}: used, pinned or queued since the plan was made; kept")
            return False
        if store.is_serving(c.folder, c.filename):
            skip(f"{c.ref}: a peer is downloading it from this node; kept")
            return False
        record = index.get_file(c.folder, c.filename)
        if record is None:
            return True
        links = 1
        if path.exists():
            if not record.failed_check and not trusted(index, record, path):
                # Someone changed the file since cmcache placed it: it is theirs now.
                index.forget_file(c.folder, c.filename)
                skip(f"{c.ref}: changed since it was downloaded; left alone and unmanaged")
                return False
            links = path.stat().st_nlink
        index.mark_removing(c.folder, c.filename)
        _remove_model(store, c.folder, c.filename)
        index.forget_file(c.folder, c.filename)
        index.bump("prune_removed_files")
        if links == 1:  # the last name of these bytes
            index.bump("prune_freed_bytes", by=c.size)
        return True
    finally:
        lock.release()


@dataclass(frozen=True)
class PruneReport:
    """What prune removed (or would), and where that leaves the cache."""

    removed: tuple[Candidate, ...]
    plan: PrunePlan
    forgotten: tuple[str, ...]  # records whose file was already gone
    dry_run: bool

    @property
    def freed(self) -> int:
        """Managed bytes released: those whose every name was removed."""
        gone = {c.ref for c in self.removed}
        return sum(c.size for c in self.plan.remove if all(name.ref in gone for name in c.names))

    @property
    def managed_size(self) -> int:
        """Managed bytes left."""
        return self.plan.managed_size - self.freed


def run_prune(
    cache: Cache,
    *,
    max_size: int | None,
    min_free: int | None,
    keep_days: float,
    dry_run: bool,
    on_skip: Note | None = None,
    settings: Settings | None = None,
) -> PruneReport:
    """Finish interrupted removals, plan, then remove (or only plan, with ``dry_run``).

    With ``settings`` whose ``cache.policy`` is "cost", files cheapest to bring back go first.
    """
    gone = [] if dry_run else reconcile(cache.index, cache.store)
    cost = None
    if settings is not None and settings.cache.policy == "cost":
        cost = cost_order_for(cache.index, read_forecast(settings, cache.index, planning=True))
    plan = plan_prune(
        candidates(cache.index),
        now=time.time(),
        keep_days=keep_days,
        max_size=max_size,
        min_free=min_free,
        free_bytes=shutil.disk_usage(cache.store.root).free,
        cost=cost,
    )
    if dry_run:
        removed = [name for c in plan.remove for name in c.names]
    else:
        removed = execute(
            plan.remove, cache.index, cache.store, keep_days=keep_days, on_skip=on_skip
        )
        if settings is not None:
            withdraw_quietly(settings, [c.ref for c in removed])
    return PruneReport(
        tuple(removed), plan, tuple(f"{r.folder}/{r.filename}" for r in gone), dry_run
    )


def remove_now(cache: Cache, folder: str, filename: str) -> tuple[int | None, str]:
    """Remove one managed model asked for by name (``forget --delete``): pinned or recently
    used, it goes anyway; under its lock, the index marked first, unpinned after.

    Returns:
        (bytes freed, or None when nothing was removed; why not).
    """
    ref = f"{folder}/{filename}"
    index, store = cache.index, cache.store
    record = index.get_file(folder, filename)
    if record is None:
        return None, f"{ref} is not a file cmcache manages; left alone"
    lock = FileLock(store.lock_path(folder, filename))
    if not lock.try_acquire():
        return None, f"{ref}: a download of it is under way; left alone"
    try:
        path = store.final_path(folder, filename)
        if path.exists() and not record.failed_check and not trusted(index, record, path):
            index.forget_file(folder, filename)
            return None, f"{ref}: changed since it was downloaded; left alone and unmanaged"
        index.mark_removing(folder, filename)
        _remove_model(store, folder, filename)
        index.forget_file(folder, filename)
        index.unpin(folder, filename)
    finally:
        lock.release()
    return record.size, ""


def _remove_model(store: ModelStore, folder: str, filename: str) -> None:
    """Remove a model (a file, or a whole repository's folder) and the empty subfolders it
    leaves (never the model folder)."""
    path = store.final_path(folder, filename)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        remove_quietly(path)
    _remove_empty_parents(path.parent, store.root / store.disk_folder(folder))


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove empty subfolders a removal left behind, up to (not including) the model folder."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
