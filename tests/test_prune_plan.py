"""The prune and prefetch planners, on plain data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cmcache.core.manifest.entry import Entry
from cmcache.core.planning.prefetch import Wanted, plan_prefetch
from cmcache.core.planning.prune import DAY, Candidate, merge_links, plan_prune
from cmcache.core.targets import Target

NOW = 1_000_000_000.0
GB = 10**9


def c(name: str, size: int, days_ago: float, pinned: bool = False, busy: bool = False) -> Candidate:
    return Candidate("checkpoints", name, size, NOW - days_ago * DAY, pinned, busy)


def refs(plan_remove: tuple[Candidate, ...]) -> list[str]:
    return [x.filename for x in plan_remove]


def test_least_recently_used_go_first_until_under_budget() -> None:
    files = [c("new", GB, 10), c("old", GB, 30), c("mid", GB, 20)]
    plan = plan_prune(files, now=NOW, keep_days=7, max_size=GB)
    assert refs(plan.remove) == ["old", "mid"]
    assert plan.resulting_size == GB and plan.freed == 2 * GB and plan.reached


def test_pins_recent_use_and_downloads_in_flight_are_protected() -> None:
    files = [
        c("pinned", GB, 90, pinned=True),
        c("recent", GB, 1),
        c("busy", GB, 90, busy=True),
        c("stale", GB, 90),
    ]
    plan = plan_prune(files, now=NOW, keep_days=7, max_size=0)
    assert refs(plan.remove) == ["stale"]
    assert not plan.reached and plan.protected == 3 and plan.resulting_size == 3 * GB


def test_without_targets_every_unprotected_file_goes() -> None:
    files = [c("a", 1, 30), c("b", 2, 40), c("keep", 3, 0)]
    plan = plan_prune(files, now=NOW, keep_days=7)
    assert refs(plan.remove) == ["b", "a"] and plan.reached


def test_min_free_evicts_until_the_disk_has_room() -> None:
    files = [c("a", 5 * GB, 30), c("b", 5 * GB, 20), c("c", 5 * GB, 10)]
    plan = plan_prune(files, now=NOW, keep_days=7, min_free=12 * GB, free_bytes=3 * GB)
    assert refs(plan.remove) == ["a", "b"]


def test_max_size_and_min_free_must_both_hold() -> None:
    files = [c("a", GB, 30), c("b", GB, 20), c("c", GB, 10)]
    plan = plan_prune(files, now=NOW, keep_days=7, max_size=2 * GB, min_free=3 * GB, free_bytes=0)
    assert refs(plan.remove) == ["a", "b", "c"]


def test_ties_break_by_size_then_name() -> None:
    files = [c("b", GB, 30), c("a", GB, 30), c("big", 3 * GB, 30)]
    assert refs(plan_prune(files, now=NOW, keep_days=0).remove) == ["big", "a", "b"]


def test_empty_cache_and_already_within_budget() -> None:
    assert plan_prune([], now=NOW, keep_days=7, max_size=0).remove == ()
    plan = plan_prune([c("a", GB, 30)], now=NOW, keep_days=7, max_size=2 * GB)
    assert plan.remove == () and plan.reached


def test_keep_days_zero_protects_nothing_by_age() -> None:
    assert refs(plan_prune([c("a", 1, 0.0001)], now=NOW, keep_days=0).remove) == ["a"]


def want(name: str, size: int | None) -> Wanted:
    entry = Entry("loras", name, ("https://h/" + name,), size=size)
    return Wanted(Target(entry, Path("/r") / name, Path("/s") / name), size)


def test_prefetch_evicts_lru_unprotected_files_to_make_room() -> None:
    cached = [c("old", 4 * GB, 30), c("newer", 4 * GB, 20), c("pinned", 4 * GB, 90, pinned=True)]
    plan = plan_prefetch(
        [want("x", 3 * GB)], cached, now=NOW, keep_days=7, max_size=13 * GB, never_evict=set()
    )
    assert [w.target.entry.filename for w in plan.fetch] == ["x"]
    assert [v.filename for v in plan.evict] == ["old"]


def test_prefetch_never_evicts_listed_models_and_skips_what_cannot_fit() -> None:
    cached = [c("listed", 4 * GB, 30), c("pinned", 4 * GB, 90, pinned=True)]
    plan = plan_prefetch(
        [want("x", 3 * GB), want("small", GB)],
        cached,
        now=NOW,
        keep_days=7,
        max_size=9 * GB,
        never_evict={"checkpoints/listed"},
    )
    assert [w.target.entry.filename for w in plan.fetch] == ["small"]
    assert plan.evict == () and "needs" in plan.skipped[0][1]


def test_prefetch_without_budget_fetches_everything() -> None:
    plan = plan_prefetch(
        [want("x", None)], [], now=NOW, keep_days=7, max_size=None, never_evict=set()
    )
    assert len(plan.fetch) == 1 and plan.evict == ()


def test_hard_links_count_once_and_are_evicted_together() -> None:
    linked = [replace(c("a", GB, 30), inode=7), replace(c("b", GB, 12), inode=7)]
    files = merge_links([*linked, c("d", GB, 20)])
    plan = plan_prune(files, now=NOW, keep_days=7, max_size=GB)
    assert plan.managed_size == 2 * GB  # not 3: a and b are one file
    # The pair was last used 12 days ago (through b): d goes first, and that is enough.
    assert refs(plan.remove) == ["d"] and plan.reached
    plan = plan_prune(files, now=NOW, keep_days=7, max_size=0)
    assert [[n.filename for n in x.names] for x in plan.remove] == [["d"], ["a", "b"]]
    assert plan.freed == 2 * GB


def test_one_protected_name_protects_every_name_of_its_bytes() -> None:
    files = merge_links([replace(c("a", GB, 30), inode=7), replace(c("b", GB, 30, True), inode=7)])
    plan = plan_prune(files, now=NOW, keep_days=7, max_size=0)
    assert plan.remove == () and plan.protected == 1
