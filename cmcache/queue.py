"""The download queue as users see it: status, pause, resume, cancel (by id or ref)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.engine.aria2 import RpcError
from cmcache.errors import EngineError, RefError
from cmcache.fsutil import remove_quietly
from cmcache.manifest import Entry
from cmcache.results import Target

if TYPE_CHECKING:
    from cmcache.cache.index import Index, Job
    from cmcache.cache.store import ModelStore
    from cmcache.engine.aria2 import Transfer
    from cmcache.engine.link import EngineLink


@dataclass(frozen=True)
class QueueEntry:
    """One download: its id (aria2 GID), ref, state and progress."""

    id: str
    ref: str
    state: str  # active | waiting | paused | error | complete | stopped
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
        state = "stopped" if not reachable else "lost"
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
    """Every job the index knows, with live state when its daemon answers."""
    entries = []
    for job in index.jobs():
        transfer = None
        reachable = link is not None
        if link is not None:
            try:
                transfer = link.engine(job.rpc).tell([job.gid]).get(job.gid)
            except (EngineError, RpcError):
                reachable = False
        entries.append(_state(job, transfer, reachable))
    return entries


def finished_targets(index: Index, link: EngineLink, store: ModelStore) -> list[Target]:
    """Targets whose download finished in the daemon but was not placed (e.g. ``--detach``)."""
    targets = []
    for job in index.jobs():
        try:
            transfer = link.engine(job.rpc).tell([job.gid]).get(job.gid)
        except (EngineError, RpcError):
            continue
        if transfer is not None and transfer.status == "complete":
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
        index.forget_job(job.folder, job.filename)
        done.append(job.ref)
    return done
