"""The pieces of evidence a forecast (``predict``) weighs about the next lead. Pure.

Each signal maps a lead to an estimated chance (0-1) and its reason in words. Launches come
earliest first.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cmcache.core.planning.sessions import Launch

HOUR = 3600.0
DAY = 24 * HOUR
STEP_PAUSE = 20 * 60.0  # a launch this soon after the work before it is a next step of that work
HABIT = 1.5 * HOUR  # "at this time of day": this close to now's, on the same kind of day
AROUND = 5 * HOUR  # "around this time of day": most of a working day's span
LEFT_OFF = (1 * HOUR, 6 * HOUR)  # the hours before and after this time, a day before, that tell

Evidence = dict[str, tuple[float, str]]  # ref → (estimate 0-1, reason)


def file_name(ref: str) -> str:
    """What a reason calls a model: its file name."""
    return ref.rpartition("/")[2]


def step_pause(gap: float) -> float:
    """What makes a launch a next step: ``STEP_PAUSE``, less for short session gaps."""
    return min(STEP_PAUSE, gap * 2 / 3)


def _best(into: Evidence, counts: Counter[str], n: int, head: str, tail: str = "") -> None:
    """Keep, per model, the strongest ``k / (n + 1)`` with its reason."""
    for ref, k in counts.items():
        value = k / (n + 1)
        if value > into.get(ref, (0.0, ""))[0]:
            into[ref] = (value, f"{head} {k} of {n}{tail}")


def _close(at: float, other: float, within: float) -> bool:
    """Whether two moments are within ``within`` of each other's time of day."""
    apart = (at - other) % DAY
    return min(apart, DAY - apart) <= within


def _weekend(at: float) -> bool:
    """Saturday or Sunday (UTC): the epoch began on a Thursday."""
    return (int(at // DAY) + 3) % 7 >= 5


def follows(launches: Sequence[Launch], pause: float) -> tuple[Evidence, Evidence]:
    """What came as the next step after the latest launch's lead, and as the second step
    after the lead of the launch before it (a chain: base, refiner, upscaler)."""
    found: list[Evidence] = []
    for back, words in ((1, "follows"), (2, "comes two steps after")):
        if len(launches) < back:
            found.append({})
            continue
        lead = launches[-back].lead
        after: Counter[str] = Counter()
        times = 0
        past = launches[:-1]
        for at, launch in enumerate(past[: len(past) - back]):
            if launch.lead == lead:
                times += 1
                steps = past[at + 1 : at + 1 + back]
                if all(step.idle < pause for step in steps):
                    after[steps[-1].lead] += 1
        evidence: Evidence = {}
        _best(evidence, after, times, f"{words} {file_name(lead)}", " times")
        found.append(evidence)
    return found[0], found[1]


def habit(launches: Sequence[Launch], now: float, pause: float) -> Evidence:
    """What came as a next step at this time of day, on the same kind of day."""
    return _at_this_time(
        launches, now, HABIT, lambda launch: launch.idle < pause, "a next step at this time of day"
    )


def new_work(
    launches: Sequence[Launch],
    now: float,
    pause: float,
    since: float,
    within: float = HABIT,
    when: str = "at",
) -> Evidence:
    """What began new work (not a next step) within ``within`` of this time of day (``when``
    it, in words), on the same kind of day, before ``since`` (the session under way is what
    the next step weighs)."""
    return _at_this_time(
        launches,
        now,
        within,
        lambda launch: launch.idle >= pause and launch.start < since,
        f"began new work {when} this time of day",
    )


def _at_this_time(
    launches: Sequence[Launch],
    now: float,
    within: float,
    kept: Callable[[Launch], bool],
    words: str,
) -> Evidence:
    """The share each lead had of the ``kept`` launches within ``within`` of this time of day,
    on the same kind of day."""
    weekend = _weekend(now)
    counts = Counter(
        launch.lead
        for launch in launches
        if kept(launch) and _weekend(launch.start) == weekend and _close(launch.start, now, within)
    )
    found: Evidence = {}
    _best(found, counts, sum(counts.values()), words, " times")
    return found


def left_off(launches: Sequence[Launch], now: float, pause: float, at_home: Evidence) -> Evidence:
    """The latest new work begun on the latest past day with any from this time of day on,
    among what begins new work at this time (``at_home``): where the person who works now
    left off, and may pick up again."""
    starts = [launch.start for launch in launches]
    before, after = LEFT_OFF
    for back in range(1, 8):
        low = bisect_left(starts, now - back * DAY - before)
        high = bisect_left(starts, now - back * DAY + after)
        then = [
            launch.lead
            for launch in launches[low:high]
            if launch.idle >= pause and launch.lead in at_home
        ]
        if then:
            when = "yesterday" if back == 1 else f"{back} days ago"
            return {then[-1]: (1.0, f"where the work at this time left off {when}")}
    return {}
