"""Prediction, cost eviction and their place in the prune and prefetch plans, on plain data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cmcache.adapters.storage.index import Index
from cmcache.core.manifest.entry import Entry
from cmcache.core.planning.predict import forecast
from cmcache.core.planning.prefetch import PrefetchPlan, Wanted, plan_prefetch
from cmcache.core.planning.prune import (
    DAY,
    Candidate,
    CostOrder,
    cost_order,
    plan_prune,
)
from cmcache.core.planning.sessions import runs_from_uses, sessions_from_uses
from cmcache.core.targets import Target

NOW = 1_000_000_000.0
HOUR = 3600.0
GB = 10**9


def c(name: str, size: int, hours_ago: float = 48, pinned: bool = False) -> Candidate:
    return Candidate("checkpoints", name, size, NOW - hours_ago * HOUR, pinned, False)


def names(cands: tuple[Candidate, ...]) -> list[str]:
    return [x.filename for x in cands]


def want(name: str, size: int, chance: float | None = None) -> Wanted:
    entry = Entry("checkpoints", name, ("https://h/" + name,), size=size)
    return Wanted(Target(entry, Path("/r") / name, Path("/s") / name), size, "why", chance)


Steps = list[tuple[str, float]]


def uses(*sessions: tuple[float, Steps]) -> list[tuple[str, float]]:
    """Uses in time order from sessions given as (start, [(ref, seconds after start)])."""
    stream = sorted((start + after, ref) for start, steps in sessions for ref, after in steps)
    return [(ref, at) for at, ref in stream]


# ------------------------------------------------------------------ sessions and runs


def test_runs_kept_by_the_index_are_the_runs_of_the_log(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3", session_gap=600)
    stream = [("a/x", 0.0), ("a/y", 5.0), ("a/x", 300.0), ("a/x", 1000.0), ("a/y", 2000.0)]
    for ref, at in stream:
        folder, name = ref.split("/")
        index.record_use(folder, name, at=NOW - 3000 + at)
    expected = runs_from_uses(((r, NOW - 3000 + at) for r, at in stream), 600)
    assert index.runs() == expected
    assert [(r.ref, r.uses) for r in expected] == [("a/x", 2), ("a/y", 1), ("a/x", 1), ("a/y", 1)]
    index.close()
    # Opened with another gap, the runs are rebuilt from the log; read-only, recomputed.
    again = Index(tmp_path / "index.sqlite3", session_gap=5000)
    assert [(r.ref, r.uses) for r in again.runs()] == [("a/x", 3), ("a/y", 2)]
    again.close()
    readonly = Index(tmp_path / "index.sqlite3", session_gap=600, readonly=True)
    assert readonly.runs() == expected
    readonly.close()


def test_sessions_kept_by_the_index_are_the_sessions_of_its_runs(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3", session_gap=600)
    stream = [("a/x", 0.0), ("a/y", 5.0), ("a/z", 30.0), ("a/x", 300.0), ("a/y", 2000.0)]
    stream += [("a/x", 2010.0), ("a/z", 4000.0), ("a/x", 4500.0), ("a/y", 9000.0)]
    for ref, at in stream:
        folder, name = ref.split("/")
        index.record_use(folder, name, at=NOW - 10_000 + at)
    timed = [(ref, NOW - 10_000 + at) for ref, at in stream]
    sessions = index.sessions()
    assert sessions == sessions_from_uses(timed, 600)
    assert [[launch.models for launch in s.launches] for s in sessions] == [
        [("a/x", "a/y"), ("a/z",)],  # y began 5 s after x: one launch; z 25 s later: another
        [("a/y", "a/x")],
        [("a/z",), ("a/x",)],
        [("a/y",)],
    ]
    # Nothing was in use for 25 s before z; 1700 s before the second session (after x at 300).
    assert [launch.idle for launch in sessions[0].launches] == [600, 25]
    assert sessions[1].launches[0].idle == 1700
    index.record_use("a", "w", at=NOW - 10_000 + 200)  # late news of an earlier use: redone
    timed = sorted([*timed, ("a/w", NOW - 10_000 + 200)], key=lambda use: use[1])
    assert index.sessions() == sessions_from_uses(timed, 600)
    assert index.sessions()[0].launches[-1].models == ("a/w",)
    assert index.sessions()[0].launches[-1].idle == 200 - 30
    index.close()
    again = Index(tmp_path / "index.sqlite3", session_gap=3000)  # another gap: rebuilt
    assert again.sessions() == sessions_from_uses(timed, 3000)
    assert len(again.sessions()) == 2
    again.close()
    readonly = Index(tmp_path / "index.sqlite3", session_gap=600, readonly=True)  # recomputed
    assert readonly.sessions() == sessions_from_uses(timed, 600)
    readonly.close()


def two_sessions(tmp_path: Path) -> Path:
    """An index (session gap 600 s) of X then Y 100 s later, and X again 4900 s after."""
    path = tmp_path / "index.sqlite3"
    index = Index(path, session_gap=600)
    for ref, at in [("a/x", 0.0), ("a/y", 100.0), ("a/x", 5000.0)]:
        folder, name = ref.split("/")
        index.record_use(folder, name, at=NOW - 10_000 + at)
    index.close()
    return path


def test_an_index_of_schema_5_gets_the_idle_time_of_its_launches(tmp_path: Path) -> None:
    path = two_sessions(tmp_path)
    with sqlite3.connect(path) as db:  # as schema 5 left it: launches without idle time
        db.execute("ALTER TABLE use_launches DROP COLUMN idle")
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema'")
        db.execute("UPDATE meta SET key = 'use_gap' WHERE key = 'use_summary_gap'")
    db.close()
    readonly = Index(path, session_gap=600, readonly=True)  # not migrated: recomputed
    assert [launch.idle for launch in readonly.sessions()[0].launches] == [600, 100]
    readonly.close()
    again = Index(path, session_gap=600)
    sessions = again.sessions()
    assert [[launch.idle for launch in s.launches] for s in sessions] == [[600, 100], [4900]]
    again.close()


def test_an_index_of_schema_5_without_launches_opens_and_builds_them(tmp_path: Path) -> None:
    path = two_sessions(tmp_path)
    with sqlite3.connect(path) as db:  # schema 5 as first released: no sessions nor launches
        db.execute("DROP TABLE use_launches")
        db.execute("DROP TABLE use_sessions")
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema'")
        db.execute("DELETE FROM meta WHERE key = 'use_summary_gap'")
    db.close()
    again = Index(path, session_gap=600)
    idles = [[launch.idle for launch in s.launches] for s in again.sessions()]
    assert idles == [[600, 100], [4900]]
    again.close()


@pytest.mark.parametrize("gap", [600.0, 16.1 * 60, 63.33 * 60])
def test_the_index_and_the_log_make_the_same_sessions_even_from_late_uses(
    tmp_path: Path, gap: float
) -> None:
    # Late uses: a repeat that shortens a later launch's idle time, one that begins a run
    # after the latest launch began, one that joins two sessions. Gaps that floating point
    # cannot hold exactly must not lose a model's first use.
    late = [("a/x", 0.0), ("a/y", 1000.0), ("a/x", 900.0), ("a/x", 5000.0), ("a/z", 4800.0)]
    late += [("a/y", 9000.0), ("a/x", 7000.0)]
    at = 1_700_135_040.2779365
    index = Index(tmp_path / "index.sqlite3", session_gap=gap)
    for ref, after in late:
        folder, name = ref.split("/")
        index.record_use(folder, name, at=at + after)
    timed = sorted(((ref, at + after) for ref, after in late), key=lambda use: use[1])
    assert index.sessions() == sessions_from_uses(timed, gap)
    assert sum(len(s.launches) for s in index.sessions()) >= 3
    index.close()


def test_an_index_that_kept_no_sessions_has_them_built_when_opened(tmp_path: Path) -> None:
    path = two_sessions(tmp_path)
    with sqlite3.connect(path) as db:  # as an earlier cmcache left it: runs, no sessions
        db.execute("DELETE FROM use_sessions")
        db.execute("DELETE FROM use_launches")
        db.execute("DELETE FROM meta WHERE key = 'use_summary_gap'")
    db.close()
    again = Index(path, session_gap=600)
    assert [[launch.models for launch in s.launches] for s in again.sessions()] == [
        [("a/x",), ("a/y",)],
        [("a/x",)],
    ]
    again.close()


def test_a_silence_of_the_gap_splits_sessions_and_bursts_make_one_launch() -> None:
    stream = uses(
        (NOW, [("m/a", 0), ("m/vae", 2), ("m/b", 600)]),
        (NOW + 3 * HOUR, [("m/c", 0)]),
    )
    sessions = sessions_from_uses(stream, 1800)
    assert [[launch.models for launch in s.launches] for s in sessions] == [
        [("m/a", "m/vae"), ("m/b",)],
        [("m/c",)],
    ]
    assert [[launch.idle for launch in s.launches] for s in sessions] == [
        [1800, 598],  # the first launch of the log counts as after a break
        [3 * HOUR - 600],
    ]


# ------------------------------------------------------------------ prediction


def test_what_follows_a_model_in_past_sessions_is_predicted_first_with_its_reason() -> None:
    history: list[tuple[float, Steps]] = []
    for day in range(1, 6):
        start = NOW - day * DAY - 5 * HOUR
        history.append((start, [("checkpoints/a.bin", 0), ("loras/b.bin", 300)]))
        history.append((start + 2 * HOUR, [("loras/c.bin", 0), ("loras/d.bin", 300)]))
    stream = uses(*history, (NOW - 60, [("checkpoints/a.bin", 0)]))  # a session under way, with A
    best = forecast(stream, now=NOW, gap=1800).ranked(1)[0]
    assert best.ref == "loras/b.bin"
    assert best.reason == "follows a.bin 5 of 5 times"


def test_new_work_is_predicted_from_what_began_at_this_time_on_the_same_kind_of_day() -> None:
    assert (int(NOW // DAY) + 3) % 7 == 6  # NOW is a Sunday
    history: list[tuple[float, Steps]] = []
    for week in range(1, 5):  # on Sundays: SDXL (with its VAE) now, the upscaler at dawn
        history.append((NOW - week * 7 * DAY - 600, [("m/sdxl", 0), ("m/vae", 1)]))
        history.append((NOW - week * 7 * DAY - 6 * HOUR, [("m/upscaler", 0)]))
    history += [(NOW - day * DAY, [("m/video", 0)]) for day in (3, 4)]  # weekdays: not today
    stream = uses(*history, (NOW - 3 * HOUR, [("m/upscaler", 0)]))  # ended: new work is next
    seen = forecast(stream, now=NOW, gap=1800)
    best = seen.ranked(1)[0]
    assert best.ref == "m/sdxl"
    assert best.reason == "began new work at this time of day 4 of 4 times"
    ranked = [p.ref for p in seen.ranked()]
    assert ranked[0] == "m/sdxl" and "m/video" not in ranked
    # The VAE comes with SDXL: not a lead, but fetched with it and weighed in eviction.
    assert 0 < seen.chances()["m/vae"] <= seen.chances()["m/sdxl"]
    assert [p.ref for p in seen.worth_fetching()] == ["m/sdxl", "m/vae"]


def test_a_launch_minutes_after_work_is_its_next_step_and_after_a_break_new_work() -> None:
    history: list[tuple[float, Steps]] = []
    for week in range(1, 5):  # base, then its upscaler 5 minutes on; new work after breaks
        start = NOW - week * 7 * DAY - 20 * 60
        history.append((start, [("m/base", 0), ("m/upscaler", 300)]))
        history.append((start + 3 * HOUR, [("m/other", 0)]))
    history.append((NOW - 5 * DAY, [("m/other", 0)]))  # a weekday: not counted as new work now
    minutes_on = forecast(uses(*history, (NOW - 300, [("m/base", 0)])), now=NOW, gap=1800)
    assert minutes_on.ranked(1)[0].ref == "m/upscaler"
    assert minutes_on.ranked(1)[0].reason == "follows base 4 of 4 times"
    after_break = forecast(uses(*history, (NOW - 1500, [("m/base", 0)])), now=NOW, gap=1800)
    assert after_break.ranked(1)[0].ref == "m/base"
    assert after_break.ranked(1)[0].reason == "began new work at this time of day 4 of 4 times"


def test_thin_evidence_stays_a_hint_and_a_busy_box_still_gets_a_forecast() -> None:
    once = forecast(uses((NOW - 7 * DAY, [("m/a", 0)])), now=NOW, gap=1800)
    assert once.ranked(1)[0].reason == "began new work at this time of day 1 of 1 times"
    assert once.ranked(1)[0].score < 0.6  # one in one is a hint, not a certainty
    # Four workflows in turn, one every 10 minutes for a day: nothing ever began after a break
    # (no new work), and 19 minutes on a next step is not expected either: the steps still tell.
    turns = ["m/a", "m/b", "m/c", "m/d"]
    busy: list[tuple[float, Steps]] = [
        (NOW - DAY + k * 600, [(turns[k % 4], 0.0)]) for k in range(144)
    ]
    seen = forecast(uses(*busy), now=NOW - DAY + 143 * 600 + 19 * 60, gap=1800)
    assert seen.ranked(1)[0].ref == "m/a"
    assert seen.ranked(1)[0].reason == "follows d 35 of 35 times"


def test_the_lead_just_launched_is_a_guess_and_learned_new_work_outweighs_it() -> None:
    daily = [(NOW - 7 * week * DAY, [("m/daily", 0.0)]) for week in range(1, 7)]
    seen = forecast(uses(*daily, (NOW - 10, [("m/now", 0.0)])), now=NOW, gap=1800)
    assert seen.ranked(1)[0].ref == "m/daily"
    assert seen.ranked(1)[0].reason == "began new work at this time of day 6 of 6 times"
    alone = forecast(uses((NOW - 10, [("m/now", 0.0)])), now=NOW, gap=1800)
    assert [p.ref for p in alone.ranked()] == ["m/now"]  # with nothing else, the guess leads


def test_nothing_is_predicted_from_an_empty_log() -> None:
    seen = forecast([], now=NOW, gap=1800)
    assert seen.ranked() == [] and seen.chances() == {} and seen.worth_fetching() == []


def test_only_likely_leads_and_their_companions_are_worth_fetching() -> None:
    history: list[tuple[float, Steps]] = [
        (NOW - day * DAY - HOUR, [("m/flux", 0), ("m/t5", 1), ("m/ae", 2)]) for day in range(1, 8)
    ]
    history.append((NOW - 5 * DAY, [("m/rare", 0)]))
    seen = forecast(uses(*history), now=NOW, gap=1800)
    fetch = [p.ref for p in seen.worth_fetching()]
    assert fetch[0] == "m/flux" and set(fetch[1:]) == {"m/t5", "m/ae"}
    assert all(p.score >= 0.5 for p in seen.worth_fetching())


# ------------------------------------------------------------------ cost eviction


def test_cost_evicts_the_cheap_to_refetch_one_before_the_expensive_one_at_equal_recency() -> None:
    files = [c("big.safetensors", 20 * GB), c("lora.safetensors", GB // 10)]
    need_one_gb = 20 * GB + GB // 10 - GB
    lru = plan_prune(files, now=NOW, keep_days=0, max_size=need_one_gb)
    assert names(lru.remove) == ["big.safetensors"]  # LRU: at equal recency, the larger
    even = CostOrder({f.ref: 0.5 for f in files})
    cost = plan_prune(files, now=NOW, keep_days=0, max_size=20 * GB, cost=even)
    assert names(cost.remove) == ["lora.safetensors"]


def test_cost_evicts_what_comes_back_fastest_and_what_is_least_likely() -> None:
    files = [c("slow.bin", GB), c("fast.bin", GB)]
    hosts = {"checkpoints/slow.bin": "slow.example", "checkpoints/fast.bin": "fast.example"}
    order = cost_order({}, hosts, {"slow.example": 1e6, "fast.example": 1e9})
    plan = plan_prune(files, now=NOW, keep_days=0, max_size=GB, cost=order)
    assert names(plan.remove) == ["fast.bin"]
    likely = CostOrder({"checkpoints/slow.bin": 0.05, "checkpoints/fast.bin": 0.9})
    plan = plan_prune(files, now=NOW, keep_days=0, max_size=GB, cost=likely)
    assert names(plan.remove) == ["slow.bin"]


def test_cost_frees_room_with_few_likely_bytes_and_keeps_victims_it_does_not_need() -> None:
    # Five likely LoRAs would free the room at a higher expected cost than one unlikely model.
    files = [c(f"lora{i}", GB, hours_ago=1) for i in range(5)] + [c("old", 10 * GB)]
    chance = {f.ref: 0.8 for f in files} | {"checkpoints/old": 0.01}
    plan = plan_prune(files, now=NOW, keep_days=0, max_size=10 * GB, cost=CostOrder(chance))
    assert names(plan.remove) == ["old"] and plan.reached
    # A cheap victim taken on the way is kept once a larger one frees enough by itself.
    files = [c("cheap", GB), c("big", 10 * GB), c("keep", 5 * GB)]
    chance = {"checkpoints/cheap": 0.01, "checkpoints/big": 0.02, "checkpoints/keep": 0.9}
    plan = plan_prune(files, now=NOW, keep_days=0, max_size=11 * GB, cost=CostOrder(chance))
    assert names(plan.remove) == ["big"] and plan.resulting_size == 6 * GB


def test_cost_still_respects_protection() -> None:
    files = [c("pinned", GB, pinned=True), c("recent", GB, hours_ago=1), c("free", GB)]
    plan = plan_prune(files, now=NOW, keep_days=1, max_size=0, cost=CostOrder({}))
    assert names(plan.remove) == ["free"] and not plan.reached


# ------------------------------------------------------------------ prefetch with prediction


def test_a_predicted_model_evicts_only_what_is_less_likely_than_itself() -> None:
    cached = [c("likely", 4 * GB), c("unlikely", 4 * GB, hours_ago=24)]
    chance = {"checkpoints/likely": 0.9, "checkpoints/unlikely": 0.1}

    def plan_guess(size: int) -> PrefetchPlan:
        return plan_prefetch(
            [want("guess", size, chance=0.6)],
            cached,
            now=NOW,
            keep_days=0,
            max_size=10 * GB,
            never_evict=set(),
            chance=chance,
        )

    plan = plan_guess(7 * GB)
    assert plan.fetch == () and plan.evict == ()
    assert "as likely to be needed" in plan.skipped[0][1]
    plan = plan_guess(3 * GB)
    assert [w.target.ref for w in plan.fetch] == ["checkpoints/guess"]
    assert names(plan.evict) == ["unlikely"]


def test_prefetch_by_cost_keeps_victims_it_turns_out_not_to_need() -> None:
    cached = [c("a", GB), c("b", 5 * GB)]
    chance = {"checkpoints/a": 0.01, "checkpoints/b": 0.01}
    plan = plan_prefetch(
        [want("x", 4 * GB)],
        cached,
        now=NOW,
        keep_days=0,
        max_size=7 * GB,
        never_evict=set(),
        cost=CostOrder(chance),
    )
    assert names(plan.evict) == ["b"]
