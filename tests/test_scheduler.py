"""Priority planning on top of aria2's FIFO queue (pure, no engine)."""

from __future__ import annotations

import pytest

from cmcache.core.planning.queue import QueueItem, parse_priority, plan_queue
from cmcache.core.planning.split import auto_split


def item(gid: str, priority: int, seq: int, status: str, preempted: bool = False) -> QueueItem:
    return QueueItem(gid, priority, seq, status, preempted)


def test_priorities_parse_names_and_numbers() -> None:
    assert [parse_priority(p) for p in ("high", "NORMAL", "low", "5", "-3")] == [10, 0, -10, 5, -3]
    with pytest.raises(ValueError, match="high, normal, low"):
        parse_priority("urgent")


def test_high_priority_preempts_the_lowest_active_when_full() -> None:
    items = [item("a", -10, 1, "active"), item("b", 0, 2, "active"), item("h", 10, 3, "waiting")]
    plan = plan_queue(items, limit=2)
    assert plan.pause == ("a",)
    assert plan.order == ("h",)


def test_no_preemption_when_a_slot_is_free() -> None:
    items = [item("a", -10, 1, "active"), item("h", 10, 2, "waiting")]
    plan = plan_queue(items, limit=2)
    assert plan.pause == () and plan.order == ("h",)


def test_equal_priorities_never_preempt_each_other() -> None:
    items = [item("a", 0, 1, "active"), item("b", 0, 2, "waiting")]
    assert plan_queue(items, limit=1).pause == ()


def test_preempted_downloads_resume_when_the_high_one_is_gone() -> None:
    items = [item("a", -10, 1, "paused", preempted=True), item("b", -10, 2, "waiting")]
    plan = plan_queue(items, limit=1)
    assert plan.unpause == ("a",) and plan.order[0] == "a"


def test_user_paused_downloads_are_left_alone() -> None:
    items = [item("a", 10, 1, "paused"), item("b", 0, 2, "waiting")]
    plan = plan_queue(items, limit=1)
    assert plan.unpause == () and plan.order == ("b",)


def test_waiting_queue_is_ordered_by_priority_then_arrival() -> None:
    items = [
        item("l", -10, 1, "waiting"),
        item("n", 0, 3, "waiting"),
        item("n0", 0, 2, "waiting"),
        item("x", 0, 0, "active"),
    ]
    assert plan_queue(items, limit=1).order == ("n0", "n", "l")


def test_auto_split_takes_one_segment_per_16_mib_up_to_16() -> None:
    mib = 1 << 20
    sizes = (None, 10**6, 16 * mib, 16 * mib + 1, 64 * mib, 256 * mib, 7 * 10**9)
    assert [auto_split(s) for s in sizes] == [8, 1, 1, 2, 4, 16, 16]
