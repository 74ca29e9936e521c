"""The pieces of evidence a forecast (``predict``) weighs about the next lead. Pure.

Each signal maps a lead to an estimated chance (0-1) and its reason in words.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from cmcache.core.planning.sessions import Launch, Session

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
# "At this time" looks ahead: from half an hour ago to an hour and a half from now.
BEFORE, AFTER = 0.5 * HOUR, 1.5 * HOUR
HERE = 4 * HOUR  # "at this time of day", widely: this close to now's time of day, on any day
DAY_AHEAD = 6 * HOUR  # how far a day's work runs on from this time of day
LATELY = DAY  # how fast "launched lately" fades
CONTEXT = 2  # the latest launches of a session under way whose followers are counted
MAX_SESSIONS = 200  # the latest sessions with a model that what follows it is counted over

Evidence = dict[str, tuple[float, str]]  # ref → (estimate 0-1, reason)


def file_name(ref: str) -> str:
    """What a reason calls a model: its file name."""
    return ref.rpartition("/")[2]


def _best(into: Evidence, counts: Counter[str], n: int, head: str, tail: str = "") -> None:
    """Keep, per model, the strongest ``k / (n + 1)`` with its reason."""
    for ref, k in counts.items():
        value = k / (n + 1)
        if value > into.get(ref, (0.0, ""))[0]:
            into[ref] = (value, f"{head} {k} of {n}{tail}")


def _led_in(sessions: Sequence[Session]) -> dict[str, list[int]]:
    """Each lead → the numbers of the sessions in which it led a launch."""
    where: dict[str, list[int]] = {}
    for number, session in enumerate(sessions):
        for lead in dict.fromkeys(launch.lead for launch in session.launches):
            where.setdefault(lead, []).append(number)
    return where


def follows(sessions: list[Session], near: float) -> tuple[Evidence, Evidence]:
    """What was launched right after the latest launches' leads in past sessions: after any
    of their launches, and after those ``near`` the same time of day."""
    past = sessions[:-1]
    where = _led_in(past)
    anywhere: Evidence = {}
    here: Evidence = {}
    for launch in sessions[-1].launches[-CONTEXT:]:
        lead = launch.lead
        numbers = where.get(lead, [])[-MAX_SESSIONS:]
        if not numbers:
            continue
        after: Counter[str] = Counter()
        after_here: Counter[str] = Counter()
        sessions_here = 0
        for number in numbers:
            steps = past[number].launches
            pairs = [(a.start, b.lead) for a, b in pairwise(steps) if a.lead == lead]
            after.update({b for _a, b in pairs})
            close = {b for a, b in pairs if _close(a, launch.start, near)}
            sessions_here += bool(close)
            after_here.update(close)
        head = f"follows {file_name(lead)} in"
        _best(anywhere, after, len(numbers), head, " sessions")
        if sessions_here:
            _best(here, after_here, sessions_here, head, " sessions at this time of day")
    return anywhere, here


def _close(at: float, other: float, within: float) -> bool:
    """Whether two moments are within ``within`` of each other's time of day."""
    apart = (at - other) % DAY
    return min(apart, DAY - apart) <= within


def begins_after(
    sessions: list[Session], done: int, near: tuple[float, float] | None = None
) -> Evidence:
    """What the session after one with the latest session's leads began with (with ``near``,
    (now, within): only sessions that began this close to now's time of day)."""
    where = _led_in(sessions[:-1])
    found: Evidence = {}
    for lead in dict.fromkeys(launch.lead for launch in sessions[-1].launches[-CONTEXT:]):
        after = [
            n + 1
            for n in where.get(lead, [])[-MAX_SESSIONS:]
            if n + 1 < done and (near is None or _close(sessions[n + 1].start, *near))
        ]
        if after:
            began = Counter(sessions[n].launches[0].lead for n in after)
            _best(found, began, len(after), f"began the session after {file_name(lead)} in")
    return found


def launched_now(
    launches: Iterable[tuple[int, Launch]], now: float, period: float, words: str
) -> Evidence:
    """What was launched around this time (from ``BEFORE`` ago to ``AFTER`` ahead) of past
    periods (weeks or days): out of the periods in which anything was launched then."""
    led: dict[str, set[int]] = {}
    active: set[int] = set()
    # A window (BEFORE + AFTER) is shorter than a period: a launch falls in one at most.
    ceil, early, late = math.ceil, now - BEFORE, now + AFTER
    for _session, launch in launches:  # thousands of launches: kept lean
        # The period k ≥ 1 back whose window [now - BEFORE - k·period, now + AFTER - k·period)
        # holds the launch, if any.
        k = ceil((early - launch.start) / period)
        if k >= 1 and launch.start < late - k * period:
            found_k = led.get(launch.lead)
            if found_k is None:
                found_k = led[launch.lead] = set()
            found_k.add(k)
            active.add(k)
    unit = "weeks" if period == WEEK else "days"
    counts = Counter({ref: len(ks) for ref, ks in led.items()})
    found: Evidence = {}
    _best(found, counts, len(active), f"{words} in", f" {unit}")
    return found


def launched_here(
    launches: Iterable[tuple[int, Launch]], now: float, within: float, words: str
) -> Evidence:
    """The share of the launches near this time of day (on any past day) each lead had."""
    counts = Counter(launch.lead for _n, launch in launches if _close(launch.start, now, within))
    found: Evidence = {}
    _best(found, counts, sum(counts.values()), f"{words} in", " launches")
    return found


def launched_in(session: Session) -> Evidence:
    """The share of the session's launches each lead had."""
    counts = Counter(launch.lead for launch in session.launches)
    found: Evidence = {}
    _best(found, counts, len(session.launches), "launched in this session", " times")
    return found


def launched_last_day(launches: Sequence[tuple[int, Launch]], now: float) -> Evidence:
    """What was launched last, on the latest past day with launches then, in the hours from
    this time of day on (the work a person left off)."""
    starts = [launch.start for _n, launch in launches]
    for back in range(1, 8):
        low, high = now - back * DAY - BEFORE, now - back * DAY + DAY_AHEAD
        found_from, found_to = bisect_left(starts, low), bisect_left(starts, high)
        then = [launch.lead for _n, launch in launches[found_from:found_to]]
        if then:
            found: Evidence = {}
            order = list(dict.fromkeys(reversed(then)))  # latest first
            when = "yesterday" if back == 1 else f"{back} days ago"
            for rank, lead in enumerate(order):  # the latest is a half chance, then a third…
                found[lead] = (1.0 / (rank + 2), f"where the work at this time left off {when}")
            return found
    return {}


def launched_often(launches: Iterable[tuple[int, Launch]], sessions: int, words: str) -> Evidence:
    """In how many sessions each lead was launched."""
    counts = Counter(lead for _n, lead in {(n, launch.lead) for n, launch in launches})
    found: Evidence = {}
    _best(found, counts, sessions, f"{words} in", " sessions")
    return found


def launched_lately(launches: Sequence[tuple[int, Launch]], now: float, words: str) -> Evidence:
    found: Evidence = {}
    for _session, launch in reversed(launches):
        if launch.lead not in found:
            age = max(0.0, now - launch.start)
            found[launch.lead] = (math.exp(-age / LATELY), f"{words} {_ago(age)} ago")
    return found


def _ago(seconds: float) -> str:
    if seconds < HOUR:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 2 * DAY:
        return f"{round(seconds / HOUR)} h"
    return f"{round(seconds / DAY)} days"
