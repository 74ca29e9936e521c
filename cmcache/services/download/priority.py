"""Apply the priority plan to the daemons: reorder waiting downloads, preempt, resume."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cmcache.core.errors import EngineError, RpcError
from cmcache.core.planning.queue import QueueItem, plan_queue

if TYPE_CHECKING:
    from cmcache.adapters.aria2.client import Aria2Engine
    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.adapters.storage.index import Index
    from cmcache.adapters.storage.jobs import Job


def rebalance(index: Index, link: EngineLink, concurrent: int | None) -> None:
    """For each daemon with our jobs, make the best ``concurrent`` of them the active ones.

    Every cmcache process runs this on each tick, so a high-priority pull in one process
    preempts a low-priority one started by another.
    """
    jobs_by_engine: dict[str, list[Job]] = {}
    for job in index.jobs():
        jobs_by_engine.setdefault(job.rpc, []).append(job)
    for url, jobs in jobs_by_engine.items():
        if len({j.priority for j in jobs}) < 2 and not any(j.preempted for j in jobs):
            continue  # one priority and nothing preempted: aria2's FIFO is already right
        try:
            _apply(index, link.engine(url), jobs, concurrent)
        except (EngineError, RpcError):
            continue


def _apply(index: Index, engine: Aria2Engine, jobs: list[Job], concurrent: int | None) -> None:
    states = engine.tell([j.gid for j in jobs])
    items = [
        QueueItem(j.gid, j.priority, j.seq, t.status, j.preempted)
        for j in jobs
        if (t := states.get(j.gid)) and not t.done
    ]
    limit = concurrent or int(engine.global_option("max-concurrent-downloads") or 1)
    plan = plan_queue(items, limit)
    ours = set(plan.order)
    waiting_now = [t.gid for t in engine.transfers() if t.status == "waiting" and t.gid in ours]
    wanted = [g for g in plan.order if g not in plan.unpause]
    if waiting_now != wanted:  # move only when the order is wrong: each move is a round trip
        for position, gid in enumerate(wanted):
            engine.move(gid, position)
    for gid in plan.pause:
        engine.pause(gid)
        index.set_preempted(gid, True)
    for gid in plan.unpause:
        engine.unpause(gid)
        engine.move(gid, plan.order.index(gid))
        index.set_preempted(gid, False)
