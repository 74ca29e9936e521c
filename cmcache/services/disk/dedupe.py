"""`dedupe`: identical files under root become hard links of one inode.

Only files whose sha256 is known (the index's for managed files, the hash cache's for others,
both trusted while size, mtime and inode are unchanged) and equal, on one filesystem, are
touched. Each name is replaced in two steps, and the index follows:

1. ``os.link`` the kept file to a spare name beside the duplicate;
2. ``os.replace`` the spare over the duplicate (atomic: the path never disappears);
3. record the managed name's new fingerprint (the kept file's inode and mtime).

A crash after 1 leaves every path as it was and a spare link, removed by the next run. A crash
after 2 leaves a record that names the old inode: the path is then a link of other managed
bytes with the same sha256, which every reader accepts (`placement.trusted`) and the next run
records. Recording before the replace would instead let the index name an inode the path does
not have yet, with nothing on disk to show which step was reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.adapters.storage.hash_cache import HASHES, HashCache
from cmcache.adapters.storage.locks import FileLock
from cmcache.adapters.storage.tree import link_in_place
from cmcache.core.errors import CacheError
from cmcache.core.files import remove_quietly
from cmcache.core.processes import crash_point
from cmcache.core.states import DiskState
from cmcache.services.disk.survey import Name, Survey, look
from cmcache.services.download.placement import Placement

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.services.cache.store import Cache

_RANK = {DiskState.UNMANAGED: 0, DiskState.MANAGED: 1, DiskState.PINNED: 2}


@dataclass(frozen=True)
class LinkPlan:
    """Names of the same bytes on one filesystem, and the file they all become links of."""

    sha256: str
    size: int
    keep: Name
    replace: tuple[Name, ...]  # every name of every other inode
    reclaimable: int  # bytes freed once they are links (inodes with no name outside root)


def plan_links(names: Iterable[Name]) -> list[LinkPlan]:
    """What `dedupe` would link, largest savings first.

    The file kept is the one whose bytes cmcache guards best (pinned, then managed), then the
    one with most links, then the first by path.
    """
    groups: dict[tuple[str, int, int], dict[int, list[Name]]] = {}
    for name in names:
        f = name.found
        if name.sha256 is None or f.size == 0 or f.spare_link:
            continue
        groups.setdefault((name.sha256, f.size, f.dev), {}).setdefault(f.ino, []).append(name)
    plans = []
    for (sha, size, _dev), inodes in groups.items():
        if len(inodes) < 2:
            continue

        def strength(ino: int, inodes: dict[int, list[Name]] = inodes) -> tuple[int, int, str]:
            group = inodes[ino]
            rank = max(_RANK[n.state] for n in group)
            return -rank, -group[0].found.nlink, group[0].rel

        keep = min(inodes, key=strength)
        others = [ino for ino in sorted(inodes, key=strength) if ino != keep]
        replace = tuple(n for ino in others for n in inodes[ino])
        # An inode with a name outside root keeps its bytes: only the others are freed.
        freed = sum(size for ino in others if len(inodes[ino]) == inodes[ino][0].found.nlink)
        plans.append(LinkPlan(sha, size, inodes[keep][0], replace, freed))
    return sorted(plans, key=lambda p: (-p.reclaimable, -p.size, p.keep.rel))


@dataclass(frozen=True)
class Linked:
    """One set of names made links of one file."""

    sha256: str
    size: int
    kept: str
    linked: tuple[str, ...]


@dataclass(frozen=True)
class DedupeReport:
    """What `dedupe` linked (or would) and the bytes that freed."""

    linked: tuple[Linked, ...]
    reclaimed: int
    unhashed: int  # unmanaged files whose sha256 is not known (`report --hash` learns it)
    dry_run: bool


def dedupe(
    cache: Cache, *, dry_run: bool, on_skip: Callable[[str], None] | None = None
) -> DedupeReport:
    """Make identical files under root hard links of one inode; report the bytes reclaimed.

    Raises:
        CacheError: another `dedupe` is running.
    """
    skip = on_skip or (lambda _text: None)
    store = cache.store
    lock = FileLock(store.meta_dir / "dedupe.lock")
    if not lock.try_acquire():
        raise CacheError("another cmcache dedupe is running", hint="wait for it to finish")
    try:
        hashes = HashCache(store.meta_dir / HASHES)
        survey = look(store, cache.index, hashes)
        if not dry_run:
            _finish_interrupted(survey, cache)
        plans = plan_links(survey.names)
        linked: list[Linked] = []
        reclaimed = 0
        for plan in plans:
            if dry_run:
                done, freed = plan.replace, plan.reclaimable
            else:
                done, freed = _link(plan, cache, hashes, skip)
            if done:
                names = tuple(n.rel for n in done)
                linked.append(Linked(plan.sha256, plan.size, plan.keep.rel, names))
                reclaimed += freed
        if not dry_run:
            hashes.keep_only([n.rel for n in survey.names])
            hashes.save()
        unhashed = sum(1 for n in survey.names if n.record is None and n.sha256 is None)
        return DedupeReport(tuple(linked), reclaimed, unhashed, dry_run)
    finally:
        lock.release()


def _finish_interrupted(survey: Survey, cache: Cache) -> None:
    """Record links an interrupted run made, and remove the spare names it left."""
    placement = Placement(cache.index)
    for record, found in survey.relinked:
        path = survey.root / found.rel
        sha = record.sha256 or ""
        placement.record(
            record.folder, record.filename, path, sha, record.source, record.url, record.added
        )
    for name in survey.names:
        if name.found.spare_link and name.found.nlink > 1:  # never the last name of bytes
            remove_quietly(survey.root / name.rel)


def _link(
    plan: LinkPlan, cache: Cache, hashes: HashCache, skip: Callable[[str], None]
) -> tuple[tuple[Name, ...], int]:
    """Replace each name of ``plan`` with a link of the kept file; (names done, bytes freed)."""
    store, root = cache.store, cache.store.root
    keep = plan.keep
    keep_lock = _lock(store, keep)
    if keep_lock is not None and not keep_lock.try_acquire():
        skip(f"{keep.rel}: a download of it is under way; its copies are left for now")
        return (), 0
    done: list[Name] = []
    try:
        for name in plan.replace:
            lock = _lock(store, name)
            if lock is not None and not lock.try_acquire():
                skip(f"{name.rel}: a download of it is under way; left as it is")
                continue
            try:
                link_in_place(
                    root / keep.rel,
                    root / name.rel,
                    source_is=keep.found.fingerprint,
                    path_is=name.found.fingerprint,
                )
                crash_point("dedupe-replaced")
                _record(cache, hashes, name, keep)
                done.append(name)
            except OSError as exc:
                skip(f"{name.rel}: left as it is: {exc.strerror or exc}")
            finally:
                if lock is not None:
                    lock.release()
    finally:
        if keep_lock is not None:
            keep_lock.release()
    by_inode: dict[int, int] = {}
    for name in done:
        by_inode[name.found.ino] = by_inode.get(name.found.ino, 0) + 1
    freed = 0
    for name in plan.replace:
        if by_inode.pop(name.found.ino, 0) == name.found.nlink:  # no name of it is left
            freed += plan.size
    return tuple(done), freed


def _record(cache: Cache, hashes: HashCache, name: Name, keep: Name) -> None:
    """The name now has the kept file's inode and mtime: say so where its hash is kept."""
    record = name.record
    if record is None:
        hashes.put(name.rel, keep.found.fingerprint, keep.sha256 or "")
        return
    path = cache.store.root / name.rel
    sha = record.sha256 or ""
    Placement(cache.index).record(
        record.folder, record.filename, path, sha, record.source, record.url, record.added
    )


def _lock(store: ModelStore, name: Name) -> FileLock | None:
    """The lock downloads and removals of a managed name hold (none for other files)."""
    if name.record is None:
        return None
    return FileLock(store.lock_path(name.record.folder, name.record.filename))
