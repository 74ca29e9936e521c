"""Which models will be needed next, learned from the use log, each with its reason. Pure.

What a person does next is start a workflow: its first model (the *lead* of a launch, see
``sessions``) is what to predict; the rest of the workflow comes with it. The next launch is
either a *next step* of the work before it (a refiner, an upscaler: it comes within minutes)
or *new work* (after a break, or when another person takes the box). So the forecast is a
mixture of two forecasts:

- *next step*, weighed by the chance that the launch is one, from how long nothing has been
  in use (``chance_of_step``): right on the heels of other work, a launch is as often someone
  else's new work; a few minutes on, it is usually the next step; after a longer break, new
  work. Its evidence: *follows*, what came as the next step after the latest launch's lead,
  and as the second step after the one before; *habit*, what came as a next step at this
  time of day; *again*, the lead just launched (the next step often reuses it);
- *new work*: *began*, what began new work at this time of day on the same kind of day (who
  works then, and what they like to start with), and *around* it, over most of a working
  day; *left off*, the new work begun last on the day before from this time on, of what
  begins new work now (people pick up where they stopped).

Within each, the pieces of evidence are mixed by weight (tuned by
``benchmarks/predict_tune.py``). A piece's estimates are shares of one count, shrunk toward
zero (``k / (n + 1)``): one time in one is a hint, not a certainty. A score is thus the chance
that the model leads the next launch; the piece that adds most is the reason given.

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

from cmcache.core.planning.sessions import runs_from_uses, sessions_from_uses
from cmcache.core.planning.signals import (
    AROUND,
    DAY,
    HOUR,
    Evidence,
    file_name,
    follows,
    habit,
    left_off,
    new_work,
    step_pause,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cmcache.core.planning.sessions import Launch, Run, Session

USAGE_FADES = 3 * DAY  # how fast a session counts less in how often a model is used
SOON = 12 * HOUR  # eviction weighs whether a model was used in the half day ahead, on past days
COMPANIONS_OF = 20  # the likeliest leads whose companions are scored
COMPANION_LAUNCHES = 200  # the latest launches of a lead that its companions are counted over
# Prefetch fetches a predicted lead at least this likely to lead the next launch: a wrong guess
# costs a download and evicts something else. Chosen on the replay of three other months of the
# benchmark's generator: the most waiting saved within 10 % more bytes (at 10 % of the library,
# prefetch hourly and once each workflow starts).
WORTH_FETCHING = 0.19
COMES_ALONG = 0.5  # a companion that came with its lead this often is fetched with it
# Weights, tuned on three other months of the benchmark's generator (benchmarks/predict_tune.py)
# and measured on benchmarks/data/predict-trace.json.gz.
# The chance of a next step while nothing has been in use for less than each share of the
# step pause (``signals.step_pause``); none after it.
STEP_CHANCES = ((0.15, 0.5), (0.9, 0.9))
NEXT_STEP = {"follows": 1.0, "follows_before": 0.5, "habit": 1.0, "again": 0.2}
NEW_WORK = {"began": 2.0, "began_around": 0.2, "left_off": 0.1}


@dataclass(frozen=True)
class Prediction:
    """A model, its chance of leading the next launch (0-1), and why, in words."""

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
        ``leads`` of them), best first, each followed by its companions whose share of the
        lead's launches (shrunk, as counts are) is at least ``COMES_ALONG``."""
        out: dict[str, Prediction] = {}
        for lead in self.ranked(leads):
            if lead.score < WORTH_FETCHING:
                break
            out.setdefault(lead.ref, lead)
            for p in self.companions.get(lead.ref, []):
                if p.score >= lead.score * COMES_ALONG:
                    out.setdefault(p.ref, p)
        return list(out.values())


def forecast(uses: Sequence[tuple[str, float]], *, now: float, gap: float) -> Forecast:
    """Score the models of ``uses`` ((ref, time) in time order, none after ``now``)."""
    sessions = sessions_from_uses(uses, gap)
    return forecast_sessions(sessions, now=now, gap=gap, runs=lambda: runs_from_uses(uses, gap))


def forecast_sessions(
    sessions: list[Session],
    *,
    now: float,
    gap: float,
    runs: Callable[[], Sequence[Run]],
    ahead: float = 0.0,
) -> Forecast:
    """Score the models of ``sessions`` (earliest first, none after ``now``); ``runs`` gives
    their runs, read only if eviction asks for chances. ``ahead``: score the next launch that
    comes at least this many seconds from now (``in_time``, for prefetch and eviction)."""
    if not sessions:
        return Forecast({}, {})
    launches = [launch for session in sessions for launch in session.launches]
    idle, since = quiet(sessions, now=now, gap=gap)
    step, new = evidence(launches, now=now, gap=gap, since=since)
    leads = combine(chance_of_step(idle + ahead, gap), step, new)

    def usage() -> dict[str, float]:
        usage = _usage(sessions, now)
        for ref, value in _used_soon(runs(), now, DAY, SOON).items():
            usage[ref] = max(usage.get(ref, 0.0), value)
        return usage

    return Forecast(leads, _companions(launches, leads), usage)


def quiet(sessions: Sequence[Session], *, now: float, gap: float) -> tuple[float, float]:
    """How long nothing has been in use at ``now``, and since when launches are past work (the
    start of a session under way, else now)."""
    idle = max(0.0, now - sessions[-1].end)
    return idle, sessions[-1].start if idle < gap else now


def evidence(
    launches: Sequence[Launch], *, now: float, gap: float, since: float
) -> tuple[dict[str, Evidence], dict[str, Evidence]]:
    """Each signal's evidence about the next lead: if it is a next step, and if it is new
    work (from launches before ``since``: the start of a session under way, else now)."""
    pause = step_pause(gap)
    latest, before = follows(launches, pause)
    step = {"follows": latest, "follows_before": before, "habit": habit(launches, now, pause)}
    began = new_work(launches, now, pause, since)
    new = {
        "began": began,
        "began_around": new_work(launches, now, pause, since, AROUND, "around"),
        "left_off": left_off(launches, now, pause, began),
    }
    # The lead just launched is the next step's guess, not evidence learned from the log: it
    # weighs beside learned steps, or alone; against new work alone, new work leads.
    if any(step.values()) or not any(new.values()):
        step["again"] = {launches[-1].lead: (1.0, "launched last")}
    return step, new


def in_time(gap: float) -> float:
    """How far off the launch is that prefetch and eviction plan for: a quarter of the step
    pause (5 minutes at the default gap). A download takes minutes, so a launch sooner than
    that waits for it whatever was planned; and mid-work (nothing idle yet) the launch after
    that is most likely the work's next step, not someone's launch on its heels."""
    return step_pause(gap) / 4


def chance_of_step(
    idle: float, gap: float, chances: tuple[tuple[float, float], ...] = STEP_CHANCES
) -> float:
    """The chance that the next launch is a next step, ``idle`` seconds after the last use."""
    pause = step_pause(gap)
    return next((chance for share, chance in chances if idle < share * pause), 0.0)


def combine(
    stepping: float,
    step: dict[str, Evidence],
    new: dict[str, Evidence],
    weights: tuple[dict[str, float], dict[str, float]] = (NEXT_STEP, NEW_WORK),
) -> dict[str, Prediction]:
    """The two forecasts mixed, ``stepping`` the chance of a next step (the one forecast with
    any evidence, if only one has). Each model's reason is the piece of evidence that added
    most to its score."""
    pieces: dict[str, list[tuple[float, str]]] = {}
    if not any(step.values()) or not any(new.values()):  # one forecast alone: it takes all
        stepping = 1.0 if any(step.values()) else 0.0
    mixed = ((stepping, step, weights[0]), (1 - stepping, new, weights[1]))
    for share, found, signal_weights in mixed:
        if share <= 0:
            continue
        total = sum(signal_weights.get(signal, 0.0) for signal, by_ref in found.items() if by_ref)
        for signal, by_ref in found.items():
            weight = signal_weights.get(signal, 0.0)
            if weight <= 0:
                continue
            # Estimates of one signal are shares of one count (k / (n + 1) each): they sum to
            # less than 1, and what is missing is the doubt that thin evidence leaves.
            scale = max(1.0, sum(value for value, _reason in by_ref.values()))
            for ref, (value, reason) in by_ref.items():
                pieces.setdefault(ref, []).append((share * weight / total * value / scale, reason))
    return {
        ref: Prediction(ref, round(min(1.0, sum(p for p, _r in parts)), 4), max(parts)[1])
        for ref, parts in pieces.items()
    }


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
        times = led.get(lead.ref, [])[-COMPANION_LAUNCHES:]
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
