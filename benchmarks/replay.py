"""Replay a use trace (benchmarks/use_trace.py) against cache policies, through cmcache's own code.

One pass *learns*: every use goes into a real index (``Index.record_use``,
which keeps the runs prediction reads) and, at every session start, every hourly tick and just
after every workflow starts, the product's services answer as they would then: the forecast
(``services.cache.predict.read_forecast``) and what prefetch wants
(``services.cache.prefetch.wanted_entries``: listed, predicted, popular). The log does not depend
on the policy, so these answers serve every replay.

Each replay then moves a simulated cache through time with the product's planners:
``plan_prune`` (after every session's downloads, and hourly, to the budget) and
``plan_prefetch`` (hourly, as from cron; with prediction also once each workflow starts, as the
ComfyUI node's `touch --prefetch` does), least recently used first or by ``cost_order``.

- a session needs its template's models at its start: present → hit; else it waits for the
  download (size ÷ the source's throughput; downloads of one session share the link, so their
  times add up). A model prefetch has queued but not finished is pulled at high priority, which
  preempts prefetch's low one: the session waits for the rest of it, or for all of it when
  prefetch has not reached it yet, never for the models queued before it;
- prefetch downloads one model after another in the background; bytes count, waiting does not;
  a session's own downloads take the link first, so what prefetch has queued waits for them;
- ``keep_days`` is one hour: a model in use is never evicted, everything else is fair game.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcache.adapters.storage.index import Index
from cmcache.core.catalog import Catalog
from cmcache.core.manifest.entry import Entry
from cmcache.core.planning.prefetch import Wanted, plan_prefetch
from cmcache.core.planning.prune import Candidate, CostOrder, cost_order, plan_prune
from cmcache.core.settings.model import PrefetchSettings
from cmcache.core.targets import Target
from cmcache.services.cache.predict import read_forecast
from cmcache.services.cache.prefetch import Want, wanted_entries

HOUR = 3600.0
THROUGHPUT = {"huggingface.co": 50 * 2**20}  # bytes/s, as measured from a cloud GPU box
KEEP_DAYS = 1 / 24
POPULAR = 5
PREDICTED = 3
AFTER_LAUNCH = 5.0  # seconds: the node records a workflow's first uses in a batch


@dataclass(frozen=True)
class Policy:
    name: str
    cost: bool = False
    popular: bool = False
    predict: bool = False


POLICIES = (
    Policy("LRU"),
    Policy("LRU + popular", popular=True),
    Policy("LRU + popular + predict", popular=True, predict=True),
    Policy("cost + popular", cost=True, popular=True),
    Policy("cost + popular + predict", cost=True, popular=True, predict=True),
)


@dataclass
class Moment:
    """What the product answers at one instant, for every replay to use."""

    chances: dict[str, float]
    popular: list[Want] = field(default_factory=list)
    predicted: list[Want] = field(default_factory=list)  # listed, predicted, then popular


@dataclass
class Learned:
    moments: dict[float, Moment]
    # At each session start: the model it needs first, the top 3 predicted, whether a session
    # (by the gap) was under way, the day of the trace (0 first).
    guesses: list[tuple[str, list[str], bool, int]]
    seconds: float  # the learning pass, wall time


def prefetch_settings(popular: int, predict: bool, gap_minutes: float) -> PrefetchSettings:
    return PrefetchSettings(
        models=(),
        popular=popular,
        window_days=30,
        workflows=(),
        predict=predict,
        predict_limit=PREDICTED,
        session_gap_minutes=gap_minutes,
    )


class Settings:
    """The one thing ``read_forecast`` reads from settings: the session gap."""

    def __init__(self, prefetch: PrefetchSettings) -> None:
        self.prefetch = prefetch


def catalog_of(trace: dict[str, Any]) -> Catalog:
    entries = []
    for ref, size, host in trace["models"]:
        folder, filename = ref.split("/", 1)
        entries.append(Entry(folder, filename, (f"https://{host}/{ref}",), size=size))
    return Catalog(tuple(entries))


def starts_and_ticks(trace: dict[str, Any]) -> tuple[list[float], list[float]]:
    starts = [trace["start"] + s[2] for s in trace["sessions"]]
    end = trace["start"] + trace["days"] * 86400
    ticks = [trace["start"] + h * HOUR for h in range(int((end - trace["start"]) / HOUR) + 1)]
    return starts, ticks


def launched(starts: list[float]) -> list[float]:
    """When the node's `touch --prefetch` runs after each workflow starts."""
    return sorted({start + AFTER_LAUNCH for start in starts})


def learn(trace: dict[str, Any], uses: list[tuple[float, str, int]], gap: float) -> Learned:
    """Record every use in a real index; ask the product at every session start and tick."""
    began = time.perf_counter()
    catalog = catalog_of(trace)
    starts, ticks = starts_and_ticks(trace)
    tick_set, start_set = set(ticks) | set(launched(starts)), set(starts)
    asks = sorted(tick_set | start_set)
    with_popular = prefetch_settings(POPULAR, False, gap / 60)
    with_predict = prefetch_settings(POPULAR, True, gap / 60)
    settings: Any = Settings(with_predict)
    moments: dict[float, Moment] = {}
    guesses: list[tuple[str, list[str], bool, int]] = []
    with tempfile.TemporaryDirectory() as scratch:
        index = Index(Path(scratch) / "index.sqlite3", use_log_days=30, session_gap=gap)
        at_use, last = 0, None
        for ask in asks:
            while at_use < len(uses) and uses[at_use][0] < ask:
                at, ref, _ = uses[at_use]
                folder, filename = ref.split("/", 1)
                index.record_use(folder, filename, at=at)
                last, at_use = at, at_use + 1
            seen = read_forecast(settings, index, now=ask, planning=True)
            moment = Moment(seen.chances())
            if ask in tick_set:
                moment.popular = wanted_entries(with_popular, catalog, index, ask, seen)[0]
                moment.predicted = wanted_entries(with_predict, catalog, index, ask, seen)[0]
            moments[ask] = moment
            first = uses[at_use] if at_use < len(uses) else None
            if ask in start_set and first is not None and first[0] == ask:  # its first need
                under_way = last is not None and ask - last < gap
                day = int((ask - trace["start"]) // 86400)
                top = read_forecast(settings, index, now=ask).ranked(3)
                guesses.append((first[1], [p.ref for p in top], under_way, day))
        index.close()
    return Learned(moments, guesses, time.perf_counter() - began)


@dataclass
class Held:
    size: int
    added: float
    ready: float  # when its download ends


@dataclass
class Result:
    needs: int = 0
    hits: int = 0
    bytes: int = 0
    waited: float = 0.0
    sessions: int = 0
    evicted: int = 0
    peak: int = 0


def replay(
    trace: dict[str, Any],
    uses: list[tuple[float, str, int]],
    learned: Learned,
    policy: Policy,
    budget: int,
) -> Result:
    """Move a cache of ``budget`` bytes through the trace under ``policy``."""
    sizes = {ref: size for ref, size, _ in trace["models"]}
    hosts = {ref: host for ref, _, host in trace["models"]}
    refs = [m[0] for m in trace["models"]]
    starts, ticks = starts_and_ticks(trace)
    events: list[tuple[float, int, Any]] = [(t, 0, None) for t in ticks]  # ticks first
    events += [(t, 1, n) for n, t in enumerate(starts)]
    if policy.predict:  # the node's `touch --prefetch`: a prefetch once a workflow starts
        events += [(t, 3, None) for t in launched(starts)]
    events += [(at, 2, ref) for at, ref, _ in uses]
    events.sort(key=lambda e: (e[0], e[1]))
    cache: dict[str, Held] = {}
    last_use: dict[str, float] = {}
    result = Result()
    queue_free = 0.0  # when the prefetch downloads queued so far are done

    def seconds(ref: str) -> float:
        return sizes[ref] / THROUGHPUT.get(hosts[ref], THROUGHPUT["huggingface.co"])

    def candidates(now: float, busy: set[str]) -> list[Candidate]:
        out = []
        for ref, held in cache.items():
            folder, filename = ref.split("/", 1)
            used = last_use.get(ref, held.added)  # as the index: the last use, else placement
            busy_now = held.ready > now or ref in busy
            out.append(Candidate(folder, filename, held.size, used, False, busy_now))
        return out

    def order(now: float) -> CostOrder | None:
        if not policy.cost:
            return None
        return cost_order(learned.moments[now].chances, hosts, THROUGHPUT)

    def prune(now: float, busy: set[str]) -> None:
        plan = plan_prune(
            candidates(now, busy), now=now, keep_days=KEEP_DAYS, max_size=budget, cost=order(now)
        )
        for c in plan.remove:
            del cache[c.ref]
        result.evicted += len(plan.remove)

    def prefetch(now: float) -> None:
        nonlocal queue_free
        moment = learned.moments[now]
        wants = moment.predicted if policy.predict else moment.popular
        missing = [wanted(w) for w in wants if w.entry.ref not in cache]
        plan = plan_prefetch(
            missing,
            candidates(now, set()),
            now=now,
            keep_days=KEEP_DAYS,
            max_size=budget,
            never_evict={w.entry.ref for w in wants},
            chance=moment.chances if (policy.predict or policy.cost) else None,
            cost=order(now),
        )
        for c in plan.evict:
            del cache[c.ref]
        result.evicted += len(plan.evict)
        queue_free = max(queue_free, now)
        for want in plan.fetch:
            ref = want.target.ref
            queue_free += seconds(ref)
            cache[ref] = Held(sizes[ref], now, queue_free)
            result.bytes += sizes[ref]

    for now, kind, what in events:
        if kind == 0:
            prune(now, set())
            if policy.popular or policy.predict:
                prefetch(now)
        elif kind == 1:
            needs = [refs[i] for i in trace["templates"][trace["sessions"][what][1]][1]]
            result.sessions += 1
            own = fresh = 0.0  # seconds the session waits; of them, its own new downloads
            for ref in needs:
                result.needs += 1
                held = cache.get(ref)
                if held is not None and held.ready <= now:
                    result.hits += 1
                elif held is not None:  # a prefetch is bringing it
                    # The session's own pull (high priority) takes over: it waits for the rest
                    # of the download under way, or for its own download if not begun yet.
                    wait = min(held.ready - now, seconds(ref))
                    own += wait
                    held.ready = now + wait
                else:
                    own += seconds(ref)
                    fresh += seconds(ref)
                    result.bytes += sizes[ref]
                    cache[ref] = Held(sizes[ref], now, now)
            result.waited += own
            if fresh:  # its new pulls take the link first: prefetch's queue waits for them (a
                # model taken over from the queue keeps the slot it had there)
                for ref, held in cache.items():
                    if held.ready > now and ref not in needs:
                        held.ready += fresh
                queue_free = max(queue_free, now) + fresh
            result.peak = max(result.peak, sum(h.size for h in cache.values()))
            prune(now, set(needs))
        elif kind == 2:
            last_use[what] = now
        else:
            prefetch(now)
    return result


def wanted(want: Want) -> Wanted:
    """What prefetch plans with, for a model it wants (no files here: paths are names)."""
    target = Target(want.entry, Path(want.entry.ref), Path(want.entry.ref))
    return Wanted(target, want.entry.size, want.reason, want.chance)


def per_user(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """One trace per user: what their own box sees."""
    out = []
    for number in range(len(trace["users"])):
        mine = dict(trace)
        mine["sessions"] = [s for s in trace["sessions"] if s[0] == number]
        out.append(mine)
    return out


def add(total: Result, part: Result) -> None:
    for name in ("needs", "hits", "bytes", "waited", "sessions", "evicted"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.peak = max(total.peak, part.peak)
