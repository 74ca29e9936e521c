"""Tune the forecast's weights on other months of the same generator; measure the benchmark's.

``python benchmarks/predict_tune.py [--seeds N] [--split DAYS]``: at every template session's
start (what ``bench.py --only predict`` scores) the forecast's evidence is collected once from
the use log as it stood then; a coordinate search over each weight then maximises top-3
accuracy (ties: top-1) over ``--seeds`` months (default 3) that use_trace.py draws with other
seeds: other people, repertoires and habits, none of them the benchmark's. Accuracy is printed
for the benchmark's month (benchmarks/data/predict-trace.json.gz), before and after
``--split`` days (default 14), with the weights ``core/planning/predict.py`` carries and with
the tuned ones, and beside the *ceiling*: the share a predictor would reach that knew who is at
the box, every user's repertoire and habits, and the generator's own probabilities, and the
forecast over each user's own log (as if the log said who used what).
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import use_trace as month

from cmcache.core.planning import predict
from cmcache.core.planning.predict import chance_of_step, combine, evidence, quiet
from cmcache.core.planning.sessions import sessions_from_uses
from cmcache.core.planning.signals import Evidence

GAP = 1800.0  # the default session gap, as in the bench
GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0)
ROUNDS = 3


@dataclass(frozen=True)
class Ask:
    """One session start: the model it needed first and the evidence at that moment."""

    day: int
    need: str
    idle: float  # seconds since the last use
    step: dict[str, Evidence]
    new: dict[str, Evidence]


def collect(trace: dict[str, object]) -> list[Ask]:
    """The evidence at every session start, from the uses before it."""
    uses = month.uses(trace)  # type: ignore[arg-type]
    start = float(trace["start"])  # type: ignore[arg-type]
    asks = sorted({start + s[2] for s in trace["sessions"]})  # type: ignore[attr-defined]
    out, at_use = [], 0
    for ask in asks:
        while at_use < len(uses) and uses[at_use][0] < ask:
            at_use += 1
        sessions = sessions_from_uses([(ref, at) for at, ref, _ in uses[:at_use]], GAP)
        if not sessions or at_use >= len(uses) or uses[at_use][0] != ask:
            continue
        launches = [launch for session in sessions for launch in session.launches]
        idle, since = quiet(sessions, now=ask, gap=GAP)
        step, new = evidence(launches, now=ask, gap=GAP, since=since)
        day = int((ask - start) // 86400)
        out.append(Ask(day, uses[at_use][1], idle, step, new))
    return out


# next step, new work, and the chances of a next step by idle time
Weights = tuple[dict[str, float], dict[str, float], tuple[tuple[float, float], ...]]


def accuracy(asks: list[Ask], weights: Weights) -> tuple[float, float, int]:
    """Top-3 and top-1 shares of ``asks`` with the weights."""
    top3 = top1 = 0
    for ask in asks:
        stepping = chance_of_step(ask.idle, GAP, weights[2])
        leads = combine(stepping, ask.step, ask.new, weights[:2])
        best = [p.ref for p in sorted(leads.values(), key=lambda p: (-p.score, p.ref))[:3]]
        top3 += ask.need in best
        top1 += best[:1] == [ask.need]
    return top3 / max(1, len(asks)), top1 / max(1, len(asks)), len(asks)


def tune(asks: list[Ask]) -> Weights:
    """Coordinate search from the current weights; a change is kept only when it scores better
    (ties keep the weight as it was)."""
    step, new = dict(predict.NEXT_STEP), dict(predict.NEW_WORK)
    rest = {f"step_chance_{n}": c for n, (_share, c) in enumerate(predict.STEP_CHANCES)}
    shares = [share for share, _chance in predict.STEP_CHANCES]

    def weights() -> Weights:
        chances = tuple((share, rest[f"step_chance_{n}"]) for n, share in enumerate(shares))
        return step, new, chances

    for _ in range(ROUNDS):
        for table in (step, new, rest):
            for signal in table:
                best = table[signal]
                top = accuracy(asks, weights())[:2]
                grid = GRID if table is not rest else (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
                for value in grid:
                    table[signal] = value
                    score = accuracy(asks, weights())[:2]
                    if score > top:
                        best, top = value, score
                table[signal] = best
    return weights()


def ceiling(trace: dict[str, Any], split: int) -> tuple[float, float]:
    """Top-3 share (tuning days, held-out days) of the best guess from the generator's truth:
    each session's user, the template chain it is in, and the probabilities that drew it."""
    templates = [(str(name), list(refs)) for name, refs in trace["templates"]]
    users = month.Users(random.Random(trace["seed"]), templates)  # as sessions() draws them
    names = [u[0] for u in month.USERS]
    weights = [1 / (1 + i) ** month.FAVOURITE_ZIPF for i in range(month.REPERTOIRE)]
    popular = sum(users.popularity)

    def bases(user: str, resume: int | None) -> Counter[int]:
        odds: Counter[int] = Counter()
        stay = 1.0
        if resume is not None:
            odds[resume] += month.P_RESUME
            stay -= month.P_RESUME
        for template, w in zip(users.repertoire[user], weights, strict=True):
            odds[template] += stay * (1 - month.P_EXPLORE) * w / sum(weights)
        for template, w in enumerate(users.popularity):
            odds[template] += stay * month.P_EXPLORE * w / popular
        return odds

    hits = [[0, 0], [0, 0]]
    state: dict[str, tuple[int, str, int]] = {}  # user → day, step in the chain, base
    for number, template, start, _prompts in trace["sessions"]:
        user, day = names[number], start // 86400
        was = state.get(user)
        odds: Counter[int] = Counter()
        if was is None or was[0] != day:
            odds = bases(user, was[2] if was else None)
        else:
            _day, step, base = was
            related, upscaler = users.related.get((user, base)), users.upscaler[user]
            rest = 1.0
            if step == "base" and related is not None:
                odds[related] += month.P_RELATED
                rest -= month.P_RELATED
            if step in ("base", "related"):
                odds[upscaler] += rest * month.P_UPSCALE
                rest *= 1 - month.P_UPSCALE
            for other, chance in bases(user, None).items():
                odds[other] += rest * chance
        leads: Counter[int] = Counter()
        for other, chance in odds.items():
            leads[templates[other][1][0]] += chance
        best = [lead for lead, _ in leads.most_common(3)]
        part = hits[day >= split]
        part[0] += 1
        part[1] += templates[template][1][0] in best
        if was is None or was[0] != day:
            state[user] = (day, "base", template)
        elif was[1] == "base" and template == users.related.get((user, was[2])):
            state[user] = (day, "related", was[2])
        elif was[1] in ("base", "related") and template == users.upscaler[user]:
            state[user] = (day, "upscaler", was[2])
        else:
            state[user] = (day, "base", template)
    return hits[0][1] / max(1, hits[0][0]), hits[1][1] / max(1, hits[1][0])


def own_log(trace: dict[str, Any], user: int) -> dict[str, Any]:
    """The trace as if the box had one user: what a log that said who used what would give."""
    return {**trace, "sessions": [s for s in trace["sessions"] if s[0] == user]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=int, default=14, metavar="DAYS")
    parser.add_argument("--seeds", type=int, default=3, metavar="N")
    args = parser.parse_args()
    split = args.split
    trace = month.load()
    asks = collect(trace)
    first = [a for a in asks if a.day < split]
    rest = [a for a in asks if a.day >= split]

    def show(name: str, weights: Weights) -> None:
        for part, which in ((f"days 1-{split}", first), (f"days {split + 1}-30", rest)):
            top3, top1, n = accuracy(which, weights)
            print(f"{name:>8} {part:>11}: top-3 {top3:6.1%}  top-1 {top1:6.1%}  ({n} sessions)")

    current = (predict.NEXT_STEP, predict.NEW_WORK, predict.STEP_CHANCES)
    show("current", current)
    known = ceiling(trace, split)
    print(f" ceiling: top-3 {known[0]:.1%} (days 1-{split}), {known[1]:.1%} (the rest)")
    mine = [a for user in range(len(trace["users"])) for a in collect(own_log(trace, user))]
    for part, which in ((f"days 1-{split}", False), (f"days {split + 1}-30", True)):
        top3, top1, n = accuracy([a for a in mine if (a.day >= split) == which], current)
        print(f"each user's own log, {part}: top-3 {top3:.1%}  top-1 {top1:.1%}  ({n} sessions)")
    others = [a for k in range(1, args.seeds + 1) for a in collect(month.generate(month.SEED + k))]
    print(f"tuning on {len(others)} sessions of {args.seeds} other months")
    tuned = tune(others)
    for name, weights in (("current", current), ("tuned", tuned)):
        top3, top1, _n = accuracy(others, weights)
        print(f"{name:>8} other months: top-3 {top3:6.1%}  top-1 {top1:6.1%}")
    show("tuned", tuned)
    print("NEXT_STEP", tuned[0], "NEW_WORK", tuned[1], "STEP_CHANCES", tuned[2])


if __name__ == "__main__":
    main()
