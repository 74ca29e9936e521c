"""The download queue as users see it: status, pause, resume, cancel (by id or ref)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.core.errors import EngineError, RefError, RpcError, UsageError
from cmcache.core.files import remove_quietly
from cmcache.core.manifest.entry import Entry
from cmcache.core.processes import process_alive
from cmcache.core.states import QueueGap, TransferStatus
from cmcache.core.targets import Outcome, PullHooks, PullOptions, Target

# How long `status --watch` goes on once nothing downloads.
WATCH_LINGER = 5.0

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cmcache.adapters.aria2.client import Transfer
    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.adapters.storage.index import Index
    from cmcache.adapters.storage.jobs import Job
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.settings.model import Settings
    from cmcache.services.cache.store import Cache


@dataclass(frozen=True)
class QueueEntry:
    """One download: its id (aria2 GID), ref, state and progress."""

    id: str
    ref: str
    state: TransferStatus | QueueGap
    priority: int
    done: int
    total: int
    speed: int
    message: str = ""

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed."""
        if self.speed <= 0 or self.total <= 0:
            return None
        return max(0, self.total - self.done) / self.speed


def _state(job: Job, transfer: Transfer | None, reachable: bool) -> QueueEntry:
    if transfer is None:
        state = QueueGap.LOST if reachable else QueueGap.STOPPED
        return QueueEntry(
            job.gid,
            job.ref,
            state,
            job.priority,
            0,
            job.size or 0,
            0,
            "" if reachable else "daemon not running; the next pull resumes it",
        )
    return QueueEntry(
        job.gid,
        job.ref,
        transfer.status,
        job.priority,
        transfer.completed,
        transfer.total,
        transfer.speed,
        transfer.error_message,
    )


def queue_status(index: Index, link: EngineLink | None) -> list[QueueEntry]:
    """Every job the index knows, with live state when its daemon answers.

    A job its daemon no longer knows, whose pull has died (a crash, a full disk), is dropped:
    nothing will finish it, and the next pull of that model starts or resumes afresh.
    """
    entries = []
    for job in index.jobs():
        transfer = None
        reachable = link is not None
        if link is not None:
            try:
                transfer = link.engine(job.rpc).tell([job.gid]).get(job.gid)
            except (EngineError, RpcError):
                reachable = False
        entry = _state(job, transfer, reachable)
        if entry.state == QueueGap.LOST and not process_alive(job.owner_pid):
            if not index.readonly:
                reason = "aria2 no longer knows it and its pull has ended"
                index.forget_job(job.folder, job.filename, ended="lost", reason=reason)
            continue
        entries.append(entry)
    return entries


def finished_targets(index: Index, link: EngineLink, store: ModelStore) -> list[Target]:
    """Targets whose download finished in the daemon but was not placed (e.g. ``--detach``)."""
    from cmcache.services.pull.repos import REPO_FILE

    targets = []
    for job in index.jobs():
        if job.source == REPO_FILE:  # a repository's file: the next pull of it places it
            continue
        try:
            transfer = link.engine(job.rpc).tell([job.gid]).get(job.gid)
        except (EngineError, RpcError):
            continue
        if transfer is not None and transfer.status == TransferStatus.COMPLETE:
            entry = Entry(
                job.folder,
                job.filename,
                (job.url,),
                sha256=job.sha256,
                size=job.size,
                source=job.source,
            )
            final = store.final_path(job.folder, job.filename)
            targets.append(Target(entry, final, Path(job.staging)))
    return targets


def select_jobs(index: Index, ids: list[str], everything: bool) -> list[Job]:
    """Jobs named by GID or ref (``--all``: every job).

    Raises:
        RefError: an id names no queued download.
    """
    jobs = index.jobs()
    if everything:
        return jobs
    chosen = []
    for ident in ids:
        match = [
            j
            for j in jobs
            if ident in (j.gid, j.ref, j.filename) or j.filename.rsplit("/", 1)[-1] == ident
        ]
        if not match:
            raise RefError(
                f"no queued download matches {ident!r}",
                ref=ident,
                candidates=tuple(f"{j.gid} {j.ref}" for j in jobs[:10]),
            )
        chosen.extend(match)
    return list({j.gid: j for j in chosen}.values())


def pause_jobs(link: EngineLink, jobs: list[Job]) -> list[str]:
    """Pause downloads (they keep their progress)."""
    done = []
    for job in jobs:
        with contextlib.suppress(RpcError):
            link.engine(job.rpc).pause(job.gid)
            done.append(job.ref)
    return done


def resume_jobs(link: EngineLink, index: Index, jobs: list[Job]) -> list[str]:
    """Unpause downloads."""
    done = []
    for job in jobs:
        with contextlib.suppress(RpcError):
            link.engine(job.rpc).unpause(job.gid)
            index.set_preempted(job.gid, False)
            done.append(job.ref)
    return done


def cancel_jobs(link: EngineLink | None, index: Index, jobs: list[Job]) -> list[str]:
    """Stop downloads and delete their partial and control files."""
    done = []
    for job in jobs:
        if link is not None:
            with contextlib.suppress(RpcError, EngineError):
                link.engine(job.rpc).remove(job.gid)
            with contextlib.suppress(RpcError, EngineError):
                link.engine(job.rpc).forget_result(job.gid)
        staging = Path(job.staging)
        remove_quietly(staging, staging.with_name(staging.name + ".aria2"))
        index.forget_job(job.folder, job.filename, ended="cancelled")
        done.append(job.ref)
    return done


@dataclass(frozen=True)
class QueueReport:
    """The queue, the cache's usage, and downloads placed while looking."""

    entries: tuple[QueueEntry, ...]
    daemon_running: bool
    files: int
    managed_size: int
    placed: tuple[Outcome, ...]


def queue_report(
    settings: Settings, cache: Cache, hooks: PullHooks, *, place: bool = True
) -> QueueReport:
    """Every job with its live state; with ``place``, finished downloads nobody watched
    (``--detach``) are verified and placed first."""
    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.services.pull.run import make_downloader

    link: EngineLink | None = EngineLink(settings)
    assert link is not None
    if not link.attach():
        link = None
    placed: tuple[Outcome, ...] = ()
    if place and link is not None and not cache.index.readonly:
        targets = finished_targets(cache.index, link, cache.store)
        if targets:
            downloader = make_downloader(settings, cache, link, hooks)
            placed = tuple(downloader.run(targets, PullOptions()))
    entries = queue_status(cache.index, link)
    if settings.cluster.enabled and not cache.index.readonly:
        _keep_cluster_locks(settings, cache, entries)
    files, size = cache.index.usage()
    return QueueReport(tuple(entries), link is not None, files, size, placed)


def _keep_cluster_locks(settings: Settings, cache: Cache, entries: list[QueueEntry]) -> None:
    """Detached origin fetches still running keep their turn in the cluster; the others
    give it back (services.cluster.node.keep_detached_locks)."""
    from cmcache.services.cluster.node import keep_detached_locks

    running = {
        e.id
        for e in entries
        if e.state in (TransferStatus.ACTIVE, TransferStatus.WAITING, TransferStatus.PAUSED)
    }
    jobs = [j for j in cache.index.jobs() if j.gid in running]
    keep_detached_locks(settings, cache.store, jobs)


def watch_queue(
    settings: Settings,
    cache: Cache,
    hooks: PullHooks,
    *,
    interval: float = 1.0,
    linger: float = WATCH_LINGER,
) -> Iterator[QueueReport]:
    """The queue every ``interval`` seconds until no download has been active or waiting for
    ``linger`` seconds (so a watcher started just before a download begins sees it). Placing is
    left to the pulls that own the downloads (and to plain ``status``), so a report never waits
    for a hash."""
    quiet_since: float | None = None
    while True:
        report = queue_report(settings, cache, hooks, place=False)
        yield report
        busy = any(isinstance(e.state, TransferStatus) and e.state.busy for e in report.entries)
        now = time.monotonic()
        quiet_since = None if busy else (quiet_since if quiet_since is not None else now)
        if quiet_since is not None and now - quiet_since >= linger:
            return
        time.sleep(interval)


def act_on_jobs(
    settings: Settings, cache: Cache, action: str, ids: list[str], everything: bool
) -> list[str]:
    """Pause, resume or cancel the named jobs (or all); returns the refs acted on.

    Raises:
        UsageError: nothing named, or the daemon is not running (pause, resume).
        RefError: an id names no queued download.
    """
    from cmcache.adapters.aria2.link import EngineLink

    if not ids and not everything:
        raise UsageError(
            f"name downloads to {action} (ids or refs from `cmcache status`), or --all"
        )
    link = EngineLink(settings)
    attached = link.attach() if action != "resume" else bool(link.engines())
    jobs = select_jobs(cache.index, ids, everything)
    if not jobs:
        return []
    if action == "cancel":
        return cancel_jobs(link if attached else None, cache.index, jobs)
    if not attached:
        raise UsageError(f"nothing to {action}: the download daemon is not running")
    if action == "pause":
        return pause_jobs(link, jobs)
    return resume_jobs(link, cache.index, jobs)
