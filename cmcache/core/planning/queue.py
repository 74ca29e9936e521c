"""Priority on top of aria2's FIFO queue: a pure plan of pauses, unpauses and queue moves.

aria2 only reorders its *waiting* queue; an active download must be paused to make room. Each
tick, the highest-priority ``limit`` downloads should be the active ones: lower-priority active
downloads are paused (marked preempted), and preempted ones are unpaused when they are back in
the top ``limit``.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITIES = {"high": 10, "normal": 0, "low": -10}
MAX_PRIORITY = 1_000_000


def parse_priority(value: str) -> int:
    """``high``/``normal``/``low`` or an integer (higher goes first).

    Raises:
        ValueError: anything else.
    """
    text = value.strip().lower()
    if text in PRIORITIES:
        return PRIORITIES[text]
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"priority must be high, normal, low or a number, got {value!r}") from None
    if abs(number) > MAX_PRIORITY:
        raise ValueError(
            f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {value}"
        )
    return number


@dataclass(frozen=True)
class QueueItem:
    """One of our downloads as the scheduler sees it."""

    gid: str
    priority: int
    seq: int
    status: str  # active | waiting | paused
    preempted: bool = False


@dataclass(frozen=True)
class QueuePlan:
    """What to change, in this order: move, pause, unpause."""

    pause: tuple[str, ...] = ()
    unpause: tuple[str, ...] = ()
    order: tuple[str, ...] = ()  # waiting downloads, best first, to place at the queue's head


def plan_queue(items: list[QueueItem], limit: int) -> QueuePlan:
    """Decide pauses, unpauses and the waiting order so the best ``limit`` downloads run."""
    eligible = [
        i
        for i in items
        if i.status in ("active", "waiting") or (i.status == "paused" and i.preempted)
    ]
    eligible.sort(key=lambda i: (-i.priority, i.seq))
    top = eligible[:limit]
    top_ids = {i.gid for i in top}
    starved = [i for i in top if i.status != "active"]
    free = limit - sum(1 for i in eligible if i.status == "active")
    need = len(starved) - max(0, free)
    pause: list[str] = []
    if need > 0:
        best_starved = max(i.priority for i in starved)
        # Preempt only strictly lower priorities: equals never thrash each other.
        victims = [
            i
            for i in eligible
            if i.status == "active" and i.gid not in top_ids and i.priority < best_starved
        ]
        victims.sort(key=lambda i: (i.priority, -i.seq))
        pause = [i.gid for i in victims[:need]]
    unpause = [i.gid for i in top if i.status == "paused"]
    waiting = [i for i in eligible if i.status == "waiting" or i.gid in unpause]
    order = tuple(i.gid for i in waiting)
    return QueuePlan(tuple(pause), tuple(unpause), order)
