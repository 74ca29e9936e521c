"""Sessions and launches from the use log. Pure.

- A *run* is one model's uses, each less than the session gap after the one before: the index
  keeps runs, a few rows per session, rather than every use.
- A *session* is runs with no silence of ``session_gap`` or more between them: the union of
  runs that overlap or sit less than the gap apart, the same split as over the raw uses.
- A *launch* is runs that begin together (each within ``burst`` of the one before): a
  workflow starting. Its first model is its *lead*, the others come with it. Its *idle* is how
  long nothing was in use before it: a few minutes when it is the next step of the work before
  (a refiner, an upscaler), longer when it is new work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

BURST = 60.0  # seconds between the first uses of models loaded for one workflow, at most


class Run(NamedTuple):
    """One model's uses, each less than the session gap after the one before."""

    ref: str
    first: float
    last: float
    uses: int


class Launch(NamedTuple):
    """Models that began being used together; ``models[0]``, the *lead*, first.

    A tuple with the lead as a field of its own: a forecast makes and reads thousands.
    """

    start: float
    models: tuple[str, ...]
    lead: str
    idle: float  # seconds since the latest use before it (the session gap for the first one)

    @classmethod
    def of(cls, start: float, models: tuple[str, ...], idle: float) -> Launch:
        """The launch of ``models`` (at least one) at ``start``, after ``idle`` seconds."""
        return cls(start, models, models[0], idle)


@dataclass(frozen=True)
class Session:
    """Uses with no silence of ``session_gap`` or more: its launches in order."""

    start: float
    end: float
    launches: tuple[Launch, ...]

    @property
    def models(self) -> tuple[str, ...]:
        """Every model of the session, in order of first use."""
        return tuple(dict.fromkeys(m for launch in self.launches for m in launch.models))


def burst_for(gap: float) -> float:
    """How close first uses must be to make one launch: ``BURST``, less for short gaps."""
    return min(BURST, gap / 30)


def runs_from_uses(uses: Iterable[tuple[str, float]], gap: float) -> list[Run]:
    """Runs from uses given in time order (what the index keeps as uses arrive)."""
    latest: dict[str, int] = {}
    runs: list[Run] = []
    for ref, at in uses:
        add_use(runs, latest, ref, at, gap)
    runs.sort(key=lambda r: r.first)
    return runs


def add_use(runs: list[Run], latest: dict[str, int], ref: str, at: float, gap: float) -> None:
    """One more use, later than those before, into ``runs``: it extends ``ref``'s latest run
    (``latest`` keeps its position) when less than ``gap`` seconds have passed, else opens one."""
    at_run = latest.get(ref)
    if at_run is not None and at - runs[at_run].last < gap:
        run = runs[at_run]
        runs[at_run] = Run(ref, run.first, max(run.last, at), run.uses + 1)
    else:
        latest[ref] = len(runs)
        runs.append(Run(ref, at, at, 1))


def sessions_from_uses(
    uses: Iterable[tuple[str, float]], gap: float, before: float | None = None
) -> list[Session]:
    """Split uses given in time order into sessions at every silence of ``gap`` or more, and
    each session into launches: what the index keeps as the uses arrive (``UseLog``).
    ``before``: the latest use before these, if any (at least ``gap`` before the first)."""
    burst = burst_for(gap)
    sessions: list[Session] = []
    launches: list[tuple[float, list[str], float]] = []  # start, models, idle
    latest: dict[str, float] = {}  # each model's latest use
    start = last_began = 0.0
    end = before if before is not None else 0.0
    seen = before is not None  # any use before this one
    for ref, at in uses:
        before = latest.get(ref)
        # The use begins a run of its model: the test the index makes (``last > at - gap``).
        began = before is None or not before > at - gap
        latest[ref] = at
        idle = max(0.0, at - end) if seen else gap
        seen = True
        if launches and idle >= gap:
            sessions.append(_session(start, end, launches))
            launches = []
        if not launches:
            start = end = at
        if began and launches and at - last_began < burst:
            launches[-1][1].append(ref)
        elif began:
            launches.append((at, [ref], idle))
        last_began = at if began else last_began
        end = max(end, at)
    if launches:
        sessions.append(_session(start, end, launches))
    return sessions


def _session(start: float, end: float, launches: list[tuple[float, list[str], float]]) -> Session:
    return Session(
        start,
        end,
        tuple(Launch.of(at, tuple(dict.fromkeys(ms)), idle) for at, ms, idle in launches),
    )
