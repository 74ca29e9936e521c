"""Partial downloads: staging files, which of them no live job will finish, and removing those.

A staging file is live while the download queue still holds its job — the test `status` uses:
a job its daemon lost and whose pull has died is dropped — or while a pull holds its lock.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.adapters.storage.locks import FileLock
from cmcache.adapters.storage.tree import walk
from cmcache.core.errors import CmcacheError
from cmcache.core.files import remove_quietly
from cmcache.services.download.queue import queue_status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.adapters.storage.index import Index
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.adapters.storage.tree import Found
    from cmcache.core.settings.model import Settings
    from cmcache.services.cache.store import Cache

CONTROL = ".aria2"  # aria2's control file beside a staging file
INCOMPLETE = ".incomplete"
DAY = 86400.0
_MODEL_STAGING = re.compile(r"[0-9a-f]{16}-")


@dataclass(frozen=True)
class Partial:
    """A staging file with its aria2 control file (or a control file left on its own)."""

    path: Path
    files: tuple[Path, ...]
    bytes: int
    mtime: float  # when it was last written

    def relative_to(self, root: Path) -> str:
        """Its path relative to root."""
        return self.path.relative_to(root).as_posix()


def partials(store: ModelStore, staged: Iterable[Found]) -> list[Partial]:
    """Staging files (as `walk` found them under the staging folder), each with its control
    file, largest first."""
    by_name = {f.rel: f for f in staged if "/" not in f.rel}
    out = []
    for name, f in by_name.items():
        if name.endswith(CONTROL) and name.removesuffix(CONTROL) in by_name:
            continue  # counted with its staging file
        control = by_name.get(name + CONTROL)
        files = [f] if control is None else [f, control]
        out.append(
            Partial(
                store.staging_dir / name,
                tuple(store.staging_dir / g.rel for g in files),
                sum(g.size for g in files),
                max(g.mtime_ns for g in files) / 1e9,
            )
        )
    return sorted(out, key=lambda p: (-p.bytes, p.path.name))


def orphaned(
    settings: Settings, store: ModelStore, index: Index | None, found: list[Partial]
) -> list[Partial]:
    """The partials no live job will finish. A read-only ``index`` is only read; a writable
    one drops lost jobs, as `status` does."""
    if not found:
        return []
    live = _live_staging(settings, index) if index is not None else set()
    return [p for p in found if _data_name(p) not in live and not _locked(store, p, probe=True)]


def remove_orphaned(
    settings: Settings, cache: Cache, *, older_than: float | None, dry_run: bool
) -> list[Partial]:
    """Remove the partials no live job will finish (not written for ``older_than`` days, when
    given), each under its download lock and re-checked against the queue."""
    found = partials(cache.store, walk(cache.store.staging_dir))
    chosen = orphaned(settings, cache.store, cache.index, found)
    if older_than is not None:
        cutoff = time.time() - older_than * DAY
        chosen = [p for p in chosen if p.mtime < cutoff]
    if dry_run:
        return chosen
    removed = []
    for partial in chosen:
        locks = [FileLock(path) for path in _lock_paths(cache.store, partial)]
        try:
            if not all(lock.try_acquire() for lock in locks):
                continue  # a pull took it up meanwhile
            if any(Path(j.staging).name == _data_name(partial) for j in cache.index.jobs()):
                continue
            remove_quietly(*partial.files)
            removed.append(partial)
        finally:
            for lock in locks:
                lock.release()
    return removed


def _data_name(partial: Partial) -> str:
    """The staging file's name (a lone control file: the name it belonged to)."""
    return partial.path.name.removesuffix(CONTROL)


def _live_staging(settings: Settings, index: Index) -> set[str]:
    """Names of the staging files of jobs the queue still holds."""
    if not index.jobs():
        return set()
    from cmcache.adapters.aria2.link import EngineLink

    link: EngineLink | None = EngineLink(settings)
    try:
        if link is not None and not link.attach():  # never starts a daemon
            link = None
    except CmcacheError:
        link = None
    live = {entry.id for entry in queue_status(index, link)}
    return {Path(job.staging).name for job in index.jobs() if job.gid in live}


def _lock_paths(store: ModelStore, partial: Partial) -> list[Path]:
    """The lock a pull of this staging file holds: a model's is named after its staging file
    (``<digest>-<name>.incomplete``), a bundle archive's after the archive."""
    name = _data_name(partial)
    if _MODEL_STAGING.match(name) or not name.endswith(INCOMPLETE):
        return [store.locks_dir / f"{name}.lock"]
    return [store.lock_path("bundles", name.removesuffix(INCOMPLETE))]


def _locked(store: ModelStore, partial: Partial, *, probe: bool) -> bool:
    """Whether a pull holds one of the partial's locks (only existing lock files are probed)."""
    for path in _lock_paths(store, partial):
        if probe and not path.exists():
            continue
        lock = FileLock(path)
        with contextlib.suppress(CmcacheError):  # a read-only root: nobody can be pulling
            if not lock.try_acquire():
                return True
            lock.release()
    return False
