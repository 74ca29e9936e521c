"""Which models will be needed next, learned from the use log, each with its reason. Pure.

What a person does next is start a workflow: its first model (the *lead* of a launch, see
``sessions``) is what to predict; the rest of the workflow comes with it. Evidence about leads:

- while a session is under way, about its next launch: *follows*, what was launched next after
  the latest launches' leads in past sessions (*follows_here*: only after launches at this time
  of day, where the same person is likely at work); *session*, what this session launched;
- once it is over, about what the next session begins with: *after_here*, what the sessions
  that began at this time of day after one with the latest leads began with; *here_all*, what
  was used at this time of day;
- either way: *yesterday*, where the work from this time of day on left off the day before;
  *weekly*, *daily*, *here*, what was launched at this time of the week, of the day (a narrow
  and a wide window); *often*, in how many sessions; *lately*, how recently.

Each piece of evidence estimates a chance; times its weight (at most 1, one set of weights
while a session is under way and one for the next session, tuned by
``benchmarks/predict_tune.py``) they combine as independent chances
(``1 - Π(1 - weight * estimate)``), and the strongest is the reason given. Counts are shrunk
toward zero (``k / (n + 1)``): one session in one is a hint, not a certainty.

A model that comes with a likely lead (its text encoder, its VAE, its LoRA) gets the lead's
chance times how often it came with it. Such *companions* are fetched after their lead and
weigh in eviction, but the ranking lists leads: what will be needed first.

Eviction ("cost" policy) asks a wider question, whether a model is needed at all before long:
its chance is the most of its lead or companion score, the share of recent sessions that used
it, and the share of past days on which it was used in the half day ahead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from cmcache.core.planning.sessions import sessions_from_runs
from cmcache.core.planning.signals import (
    DAY,
    HERE,
    HOUR,
    MAX_SESSIONS,
    WEEK,
    Evidence,
    begins_after,
    file_name,
    follows,
    launched_here,
    launched_in,
    launched_last_day,
    launched_lately,
    launched_now,
    launched_often,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cmcache.core.planning.sessions import Launch, Run, Session

USAGE_FADES = 3 * DAY  # how fast a session counts less in how often a model is used
SOON = 12 * HOUR  # eviction weighs whether a model was used in the half day ahead, on past days
COMPANIONS_OF = 20  # the likeliest leads whose companions are scored
# Prefetch fetches a predicted model only when it is more likely needed than not: a wrong guess
# costs a download and evicts something else.
WORTH_FETCHING = 0.5
# Weights of the signals, tuned on the first two weeks of benchmarks/data/predict-trace.json.gz
# (benchmarks/predict_tune.py) and measured on the two after.
UNDER_WAY = {  # while a session is under way: its next launch
    "follows": 1.0,
    "follows_here": 1.0,
    "session": 0.8,
    "yesterday": 1.0,
    "weekly": 0.8,
    "daily": 0.8,
    "here": 0.3,
    "often": 0.1,
    "lately": 0.3,
}
NEXT_SESSION = {  # once it is over: what the next session begins with
    "after_here": 0.4,
    "here_all": 0.4,
    "yesterday": 0.05,
    "weekly": 0.6,
    "daily": 0.6,
    "here": 0.3,
    "lately": 0.1,
}


@dataclass(frozen=True)
class Prediction:
    """A model, its chance of being needed soon (0-1), and why, in words."""

    ref: str
    score: float
    reason: str


@dataclass(frozen=True)
class Forecast:
    """Leads and their companions, scored."""

    leads: dict[str, Prediction]
    companions: dict[str, list[Prediction]]  # lead → what comes with it, likeliest first
    # Share of recent sessions (weighted by recency) using each model, or of past days using it
    # in the hours ahead: only eviction asks, so it is worked out when asked.
    usage_of: Callable[[], dict[str, float]] = dict

    @cached_property
    def usage(self) -> dict[str, float]:
        """How often each model was used lately (see ``usage_of``)."""
        return self.usage_of()

    def chances(self) -> dict[str, float]:
        """Every model's chance of being needed soon: as the next lead, with one, or as
        often as it was used lately (what eviction weighs)."""
        found = dict(self.usage)
        for p in self.leads.values():
            found[p.ref] = max(found.get(p.ref, 0.0), p.score)
        for withs in self.companions.values():
            for p in withs:
                found[p.ref] = max(found.get(p.ref, 0.0), p.score)
        return found

    def ranked(self, limit: int | None = None) -> list[Prediction]:
        """The models most likely needed next (the leads), best first."""
        ranked = sorted(self.leads.values(), key=lambda p: (-p.score, p.ref))
        return ranked if limit is None else ranked[:limit]

    def worth_fetching(self, leads: int | None = None) -> list[Prediction]:
        """What to download ahead: each lead at least ``WORTH_FETCHING`` likely (the first
        ``leads`` of them), best first, each followed by its companions that are too."""
        out: dict[str, Prediction] = {}
        for lead in self.ranked(leads):
            if lead.score < WORTH_FETCHING:
                break
            out.setdefault(lead.ref, lead)
            for p in self.companions.get(lead.ref, []):
                if p.score >= WORTH_FETCHING:
                    out.setdefault(p.ref, p)
        return list(out.values())


def forecast(runs: Sequence[Run], *, now: float, gap: float) -> Forecast:
    """Score the models of ``runs`` (sorted by first use, none after ``now``)."""
    return forecast_sessions(sessions_from_runs(runs, gap), now=now, gap=gap, runs=lambda: runs)


def forecast_sessions(
    sessions: list[Session], *, now: float, gap: float, runs: Callable[[], Sequence[Run]]
) -> Forecast:
    """Score the models of ``sessions`` (earliest first, none after ``now``); ``runs`` gives
    their runs, read only if eviction asks for chances."""
    if not sessions:
        return Forecast({}, {})
    under_way, found = evidence(sessions, now=now, gap=gap)
    leads = combine(found, UNDER_WAY if under_way else NEXT_SESSION)
    launches = [launch for session in sessions for launch in session.launches]

    def usage() -> dict[str, float]:
        usage = _usage(sessions, now)
        for ref, value in _used_soon(runs(), now, DAY, SOON).items():
            usage[ref] = max(usage.get(ref, 0.0), value)
        return usage

    return Forecast(leads, _companions(launches, leads), usage)


def evidence(
    sessions: list[Session], *, now: float, gap: float
) -> tuple[bool, dict[str, Evidence]]:
    """Whether a session is under way, and each signal's evidence about the next lead."""
    under_way = now - sessions[-1].end < gap
    done = sessions[:-1] if under_way else sessions  # sessions that are over
    found: dict[str, Evidence] = {}
    every = [(n, launch) for n, s in enumerate(sessions) for launch in s.launches]
    if under_way:  # the next launch of this session: any launch tells
        found["follows"], found["follows_here"] = follows(sessions, near=HERE)
        found["session"] = launched_in(sessions[-1])
        what = every
        words, count = "used", len(sessions)
    else:  # the launch the next session begins with: first launches tell
        found["after_here"] = begins_after(sessions, len(done), near=(now, HERE))
        found["here_all"] = launched_here(every, now, HERE, "used at this time of day")
        what = [(n, s.launches[0]) for n, s in enumerate(done)]
        words, count = "began a session", len(done)
    found["yesterday"] = launched_last_day(every, now)
    found["weekly"] = launched_now(what, now, WEEK, f"{words} at this time of the week")
    found["daily"] = launched_now(what, now, DAY, f"{words} at this time of day")
    found["here"] = launched_here(what, now, HERE, f"{words} at this time of day")
    found["often"] = launched_often(what, count, words)
    found["lately"] = launched_lately(what, now, words)
    return under_way, found


def combine(found: dict[str, Evidence], weights: dict[str, float]) -> dict[str, Prediction]:
    """Each model's pieces of evidence as independent chances; the strongest is the reason."""
    pieces: dict[str, list[tuple[float, str]]] = {}
    for signal, by_ref in found.items():
        weight = weights.get(signal, 0.0)
        if weight > 0:
            for ref, (value, reason) in by_ref.items():
                pieces.setdefault(ref, []).append((min(weight * value, 1.0), reason))
    leads = {}
    for ref, values in pieces.items():
        miss = 1.0
        for value, _reason in values:
            miss *= 1.0 - value
        leads[ref] = Prediction(ref, round(1.0 - miss, 4), max(values)[1])
    return leads


def _companions(
    launches: Sequence[Launch], leads: dict[str, Prediction]
) -> dict[str, list[Prediction]]:
    """What came with the likeliest leads: their chance times how often it came with them."""
    likeliest = sorted(leads.values(), key=lambda p: -p.score)[:COMPANIONS_OF]
    led: dict[str, list[Launch]] = {p.ref: [] for p in likeliest}
    for launch in launches:
        times = led.get(launch.lead)
        if times is not None:
            times.append(launch)
    out: dict[str, list[Prediction]] = {}
    for lead in likeliest:
        times = led.get(lead.ref, [])[-MAX_SESSIONS:]
        together = Counter(m for launch in times for m in launch.models[1:])
        n = len(times)
        words = f"comes with {file_name(lead.ref)}"
        withs = [
            Prediction(ref, round(lead.score * k / (n + 1), 4), f"{words} {k} of {n} times")
            for ref, k in together.most_common()
        ]
        if withs:
            out[lead.ref] = withs
    return out


def _usage(sessions: Sequence[Session], now: float) -> dict[str, float]:
    """The share of sessions using each model, each session weighted by how recent it is."""
    weights: dict[str, float] = {}
    total = 0.0
    for session in sessions:
        weight = math.exp(-max(0.0, now - session.end) / USAGE_FADES)
        total += weight
        for ref in session.models:
            weights[ref] = weights.get(ref, 0.0) + weight
    return {ref: w / (total + 1.0) for ref, w in weights.items()}


def _used_soon(runs: Sequence[Run], now: float, period: float, ahead: float) -> dict[str, float]:
    """In how many past periods each model was used in the ``ahead`` seconds that followed
    this time of the period, out of the periods the log covers."""
    if not runs:
        return {}
    used: dict[str, set[int]] = {}
    ceil, end = math.ceil, now + ahead
    for ref, first, last, _uses in runs:  # tens of thousands of runs: kept lean
        # Periods k ≥ 1 back whose window [now - k·period, now + ahead - k·period) the run meets.
        low = ceil((now - last) / period)
        high = ceil((end - first) / period) - 1
        if high >= low and high >= 1:
            found = used.get(ref)
            if found is None:
                found = used[ref] = set()
            found.update(range(max(1, low), high + 1))
    periods = max(1, math.ceil((now - runs[0].first) / period))
    return {ref: len(ks) / (periods + 1) for ref, ks in used.items()}
