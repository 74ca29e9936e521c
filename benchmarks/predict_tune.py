"""Tune the forecast's signal weights on the first part of the month's trace; measure the rest.

``python benchmarks/predict_tune.py [--split DAYS]``: at every template session's start (what
``bench.py --only predict`` scores) the forecast's evidence is collected once from the use log
as it stood then; a coordinate search over each signal's weight (0 to 1, so that a combined
score stays a chance) then maximises top-3 accuracy (ties: top-1) on the sessions of the first
``--split`` days (default 14). Accuracy is printed for those days and for the held-out days
after them, with the weights ``core/planning/predict.py`` carries and with the tuned ones.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import use_trace as month

from cmcache.core.planning import predict
from cmcache.core.planning.predict import combine, evidence
from cmcache.core.planning.sessions import Run, sessions_from_runs
from cmcache.core.planning.signals import Evidence

GAP = 1800.0  # the default session gap, as in the bench
GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
ROUNDS = 3


@dataclass(frozen=True)
class Ask:
    """One session start: the model it needed first and the evidence at that moment."""

    day: int
    need: str
    under_way: bool
    found: dict[str, Evidence]


def collect(trace: dict[str, object]) -> list[Ask]:
    """The evidence at every session start, from the runs of the uses before it."""
    uses = month.uses(trace)  # type: ignore[arg-type]
    start = float(trace["start"])  # type: ignore[arg-type]
    asks = sorted({start + s[2] for s in trace["sessions"]})  # type: ignore[attr-defined]
    runs: list[Run] = []
    latest: dict[str, int] = {}
    out, at_use = [], 0
    for ask in asks:
        while at_use < len(uses) and uses[at_use][0] < ask:  # the index's runs, as uses arrive
            at, ref, _ = uses[at_use]
            found = latest.get(ref)
            if found is not None and at - runs[found].last < GAP:
                run = runs[found]
                runs[found] = Run(ref, run.first, max(run.last, at), run.uses + 1)
            else:
                latest[ref] = len(runs)
                runs.append(Run(ref, at, at, 1))
            at_use += 1
        sessions = sessions_from_runs(runs, GAP)
        if not sessions or at_use >= len(uses) or uses[at_use][0] != ask:
            continue
        under_way, found_then = evidence(sessions, now=ask, gap=GAP)
        out.append(Ask(int((ask - start) // 86400), uses[at_use][1], under_way, found_then))
    return out


def accuracy(
    asks: list[Ask], weights: tuple[dict[str, float], dict[str, float]]
) -> tuple[float, float, int]:
    """Top-3 and top-1 shares of ``asks`` with the weights (under way, next session)."""
    top3 = top1 = 0
    for ask in asks:
        leads = combine(ask.found, weights[0] if ask.under_way else weights[1])
        best = [p.ref for p in sorted(leads.values(), key=lambda p: (-p.score, p.ref))[:3]]
        top3 += ask.need in best
        top1 += best[:1] == [ask.need]
    return top3 / max(1, len(asks)), top1 / max(1, len(asks)), len(asks)


def tune(asks: list[Ask]) -> tuple[dict[str, float], dict[str, float]]:
    """Coordinate search from the current weights over the signals each case has; a change is
    kept only when it scores better (ties keep the weight as it was)."""
    seen = (
        {s for a in asks if a.under_way for s in a.found},
        {s for a in asks if not a.under_way for s in a.found},
    )
    under = {s: predict.UNDER_WAY.get(s, 0.0) for s in sorted(seen[0])}
    nxt = {s: predict.NEXT_SESSION.get(s, 0.0) for s in sorted(seen[1])}
    for _ in range(ROUNDS):
        for weights in (under, nxt):
            for signal in weights:
                best = weights[signal]
                top = accuracy(asks, (under, nxt))[:2]
                for value in GRID:
                    weights[signal] = value
                    score = accuracy(asks, (under, nxt))[:2]
                    if score > top:
                        best, top = value, score
                weights[signal] = best
    return under, nxt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=int, default=14, metavar="DAYS")
    split = parser.parse_args().split
    asks = collect(month.load())
    first = [a for a in asks if a.day < split]
    rest = [a for a in asks if a.day >= split]

    def show(name: str, weights: tuple[dict[str, float], dict[str, float]]) -> None:
        for part, which in ((f"days 1-{split}", first), (f"days {split + 1}-30", rest)):
            top3, top1, n = accuracy(which, weights)
            print(f"{name:>8} {part:>11}: top-3 {top3:6.1%}  top-1 {top1:6.1%}  ({n} sessions)")

    show("current", (predict.UNDER_WAY, predict.NEXT_SESSION))
    tuned = tune(first)
    show("tuned", tuned)
    for case, weights in zip(("UNDER_WAY", "NEXT_SESSION"), tuned, strict=True):
        print(case, {s: w for s, w in weights.items() if w > 0})


if __name__ == "__main__":
    main()
