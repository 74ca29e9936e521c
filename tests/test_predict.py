"""Prediction and cost eviction through the CLI: `predict`, `[prefetch] predict`, `policy`."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

from conftest import Cli
from filelock import FileLock
from origin import Origin
from pulling import FAST_RETRIES, publish

from cmcache.adapters.storage.index import Index

MiB = 1 << 20
DAY = 86400.0


def catalog(cli: Cli, names: list[str], config: str = "") -> None:
    """A synced list naming ``names`` (nothing is downloaded from it)."""
    models = [
        {"folder": "checkpoints", "filename": n, "url": f"http://127.0.0.1:9/{n}", "size": 1}
        for n in names
    ]
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    cli.write_config(f'{config}\n[[sources]]\nname = "test"\nurl = "{listing}"\n')
    assert cli("sync").code == 0


def index_of(cli: Cli) -> Index:
    """The root's index (the root made first, if need be), to write past uses into."""
    cli.root.mkdir(parents=True, exist_ok=True)
    return Index(cli.root / ".cmcache" / "index.sqlite3")


def forget_uses(cli: Cli, names: list[str], days_ago: float) -> None:
    """Make ``names`` last used (and placed) ``days_ago``, with nothing in the use log."""
    at = time.time() - days_ago * DAY
    with sqlite3.connect(cli.root / ".cmcache" / "index.sqlite3") as db:
        for name in names:
            db.execute("UPDATE usage SET last_used = ? WHERE filename = ?", (at, name))
            db.execute("UPDATE files SET added = ? WHERE filename = ?", (at, name))
            db.execute("DELETE FROM use_log WHERE filename = ?", (name,))
            db.execute("DELETE FROM use_runs WHERE filename = ?", (name,))


def work_then_step(index: Index, now: float, minute: float = 60.0) -> None:
    """On this weekday, four weeks running: A at work for half an hour (a use every three
    minutes), then B, its next step, ten minutes on; ``minute`` scales the clock."""
    for week in range(1, 5):
        start = now - 7 * week * DAY - 60 * minute
        for at in range(0, 30, 3):
            index.record_use("checkpoints", "a.bin", at=start + at * minute)
        index.record_use("checkpoints", "b.bin", at=start + 40 * minute)


def test_after_a_then_b_in_five_sessions_a_session_with_a_predicts_b_first(cli: Cli) -> None:
    catalog(cli, ["a.bin", "b.bin", "c.bin", "d.bin"])
    index = index_of(cli)
    now = time.time()
    for day in range(1, 6):  # A then B, and later C then D, on each of five days
        start = now - day * DAY - 5 * 3600
        for offset, name in ((0, "a.bin"), (300, "b.bin"), (7200, "c.bin"), (7500, "d.bin")):
            index.record_use("checkpoints", name, at=start + offset)
    index.close()
    assert cli("touch", "a.bin").code == 0  # a new session begins with A
    result = cli("--json", "predict")
    assert result.code == 0, result.stderr
    first = result.json()["data"]["predictions"][0]
    assert first["ref"] == "checkpoints/b.bin"
    assert first["reason"] == "follows a.bin 5 of 5 times"
    assert 0 < first["score"] <= 1
    text = cli("predict", "--limit", "2")  # answered without the full CLI (scripts call it)
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t") == [
        "checkpoints/b.bin",
        f"{first['score']:.2f}",
        "follows a.bin 5 of 5 times",
    ]
    assert cli("-v", "predict", "--limit", "2").stdout == text.stdout  # the full CLI agrees
    bad = cli("predict", "--limit", "0")
    assert bad.code == 2 and "--limit" in bad.stderr


def test_touch_with_a_short_session_gap_makes_sessions(cli: Cli) -> None:
    catalog(cli, ["a.bin", "b.bin", "c.bin"], "[prefetch]\nsession_gap_minutes = 0.02\n")
    for _ in range(2):  # sessions: [A with B] [C] [A with B] [C]: 1.2 s of silence ends one
        assert cli("touch", "a.bin", "b.bin").code == 0
        time.sleep(1.5)
        assert cli("touch", "c.bin").code == 0
        time.sleep(1.5)
    predictions = cli("--json", "predict").json()["data"]["predictions"]
    assert predictions[0]["ref"] == "checkpoints/a.bin"
    assert predictions[0]["reason"].startswith("began new work at this time of day 2 of")
    # B comes with A (touched together): it is fetched with A, not ranked on its own.
    assert "checkpoints/b.bin" not in [p["ref"] for p in predictions]


def test_predict_without_any_use_says_there_is_nothing_to_learn_from(cli: Cli) -> None:
    catalog(cli, ["a.bin"])
    result = cli("predict")
    assert result.code == 0 and result.stdout == ""
    assert "nothing to learn from" in result.stderr
    assert cli("--json", "predict").json()["data"] == {"predictions": []}


def test_bad_prediction_and_policy_settings_are_config_errors(cli: Cli) -> None:
    cli.write_config('[cache]\npolicy = "fifo"\n')
    bad = cli("predict")
    assert bad.code == 3 and "cache.policy" in bad.stderr and '"lru" or "cost"' in bad.stderr
    cli.write_config("[prefetch]\nsession_gap_minutes = 0\n")
    bad = cli("prefetch", "--dry-run")
    assert bad.code == 3 and "prefetch.session_gap_minutes" in bad.stderr
    assert "minutes > 0" in bad.stderr


def test_prediction_never_evicts_a_pinned_listed_or_recently_used_model(
    cli: Cli, origin: Origin
) -> None:
    names = ["x.bin", "pinned.bin", "listed.bin", "recent.bin", "old.bin"]
    publish(
        cli,
        origin,
        dict.fromkeys(names, MiB),
        extra_config=FAST_RETRIES + '[cache]\nmax_size = "4.5M"\nkeep_days = 2\n'
        '[prefetch]\npredict = true\nmodels = ["listed.bin"]\n',
    )
    assert cli("pull", *names[1:]).code == 0
    assert cli("pin", "pinned.bin").code == 0
    forget_uses(cli, names[1:], days_ago=10)
    index = index_of(cli)
    now = time.time()
    for day in range(1, 7):  # X at this time of day, six days running
        index.record_use("checkpoints", "x.bin", at=now - day * DAY + 60)
    index.close()
    assert cli("touch", "recent.bin").code == 0
    plan = cli("--json", "prefetch", "--dry-run")
    assert plan.code == 0, plan.stderr
    data = plan.json()["data"]
    assert data["planned"] == ["checkpoints/x.bin"]
    assert data["reasons"]["checkpoints/x.bin"].startswith("predicted: began new work at this time")
    assert data["evicted"] == ["checkpoints/old.bin"]
    assert "would download checkpoints/x.bin: predicted: " in cli("prefetch", "--dry-run").stdout
    done = cli("--json", "prefetch")
    assert done.code == 0, done.stderr
    assert done.json()["data"]["downloaded"] == ["checkpoints/x.bin"]
    present = {p.name for p in (cli.root / "checkpoints").iterdir()}
    assert present == {"x.bin", "pinned.bin", "listed.bin", "recent.bin"}
    # A model fetched ahead is not a use: the log learns only from what people used.
    with sqlite3.connect(cli.root / ".cmcache" / "index.sqlite3") as db:
        assert db.execute("SELECT count FROM usage WHERE filename = 'x.bin'").fetchone() == (6,)
    # Nothing else may go for it: a second guess that does not fit is skipped.
    index = index_of(cli)
    for day in range(1, 7):
        index.record_use("checkpoints", "old.bin", at=now - day * DAY + 90)
    index.close()
    again = cli("--json", "prefetch")
    assert again.code == 0
    assert again.json()["data"]["evicted"] == []
    assert "skipped checkpoints/old.bin" in again.stderr


def test_cost_policy_evicts_the_cheap_to_refetch_model_first_at_equal_recency(
    cli: Cli, origin: Origin
) -> None:
    publish(
        cli,
        origin,
        {"big.bin": 2 * MiB, "small.bin": MiB},
        extra_config=FAST_RETRIES + '[cache]\npolicy = "lru"\n',
    )
    assert cli("pull", "big.bin", "small.bin").code == 0
    # Throughput is measured per source host, from the downloads themselves.
    index = index_of(cli)
    host_bytes = {(n, labels): v for n, labels, v in index.counters() if n == "source_bytes"}
    index.close()
    assert host_bytes == {("source_bytes", "host=127.0.0.1"): 3 * MiB}
    forget_uses(cli, ["big.bin", "small.bin"], days_ago=10)  # equal recency, nothing predicted
    lru = cli("--json", "prune", "--max-size", "2.5M", "--keep-days", "0", "--dry-run")
    assert [r["filename"] for r in lru.json()["data"]["removed"]] == ["big.bin"]
    cli.write_config(cli.config.read_text().replace('policy = "lru"', 'policy = "cost"'))
    cost = cli("--json", "prune", "--max-size", "2.5M", "--keep-days", "0")
    assert cost.code == 0, cost.stderr
    assert [r["filename"] for r in cost.json()["data"]["removed"]] == ["small.bin"]
    assert (cli.root / "checkpoints" / "big.bin").exists()
    assert not (cli.root / "checkpoints" / "small.bin").exists()


def test_what_follows_a_model_at_this_time_of_day_comes_first(cli: Cli) -> None:
    catalog(cli, ["a.bin", "b.bin", "c.bin"])
    index = index_of(cli)
    now = time.time()
    for week in range(1, 5):  # on this weekday: A then B around now, A then C twelve hours away
        for start, then in (
            (now - 7 * week * DAY - 900, "b.bin"),
            (now - 7 * week * DAY + 12 * 3600, "c.bin"),
        ):
            for offset, name in ((0, "a.bin"), (300, then)):
                index.record_use("checkpoints", name, at=start + offset)
    index.close()
    assert cli("touch", "a.bin").code == 0
    predictions = cli("--json", "predict").json()["data"]["predictions"]
    by_ref = {p["ref"]: p for p in predictions}  # A, begun at this time of day, is in use now
    others = [p["ref"] for p in predictions if p["ref"] != "checkpoints/a.bin"]
    assert others[:2] == ["checkpoints/b.bin", "checkpoints/c.bin"]
    assert by_ref["checkpoints/b.bin"]["reason"] == "a next step at this time of day 4 of 4 times"
    assert by_ref["checkpoints/b.bin"]["score"] > by_ref["checkpoints/c.bin"]["score"]


def test_predict_limit_counts_workflows_each_with_its_companions(cli: Cli) -> None:
    config = '[cache]\nmax_size = "1G"\n[prefetch]\npredict = true\npredict_limit = 1\n'
    catalog(cli, ["a.bin", "vae.bin", "c.bin"], config)
    index = index_of(cli)
    now = time.time()
    for week in range(1, 5):  # on this weekday: a workflow of A with its VAE now; C most weeks
        index.record_use("checkpoints", "a.bin", at=now - 7 * week * DAY + 60)
        index.record_use("checkpoints", "vae.bin", at=now - 7 * week * DAY + 61)
        if week > 1:  # after a break: new work too
            index.record_use("checkpoints", "c.bin", at=now - 7 * week * DAY + 2400)
    index.close()
    ranked = [p["ref"] for p in cli("--json", "predict").json()["data"]["predictions"]]
    assert ranked[:2] == ["checkpoints/a.bin", "checkpoints/c.bin"]  # the VAE comes with A
    plan = cli("--json", "prefetch", "--dry-run")
    assert plan.code == 0, plan.stderr
    assert plan.json()["data"]["planned"] == ["checkpoints/a.bin", "checkpoints/vae.bin"]
    reason = plan.json()["data"]["reasons"]["checkpoints/vae.bin"]
    assert reason.startswith("predicted: comes with a.bin")


def test_prefetch_plans_the_next_step_of_work_under_way(cli: Cli) -> None:
    config = '[cache]\nmax_size = "1G"\n[prefetch]\npredict = true\n'
    catalog(cli, ["a.bin", "b.bin", "c.bin"], config)
    index = index_of(cli)
    now = time.time()
    work_then_step(index, now)
    for week in range(1, 5):  # and C began the day, on the same weekday
        index.record_use("checkpoints", "c.bin", at=now - 7 * week * DAY - 2 * 3600)
    index.close()
    assert cli("touch", "a.bin").code == 0  # A at work now: its next step comes when it ends
    plan = cli("--json", "prefetch", "--dry-run")
    assert plan.code == 0, plan.stderr
    assert plan.json()["data"]["planned"] == ["checkpoints/b.bin"]
    assert plan.json()["data"]["reasons"]["checkpoints/b.bin"] == (
        "predicted: follows a.bin 4 of 4 times"
    )


def test_touch_prefetch_fetches_the_next_step_once_a_workflow_starts(
    cli: Cli, origin: Origin
) -> None:
    digests = publish(
        cli,
        origin,
        {"a.bin": MiB, "b.bin": MiB, "c.bin": MiB},
        extra_config=FAST_RETRIES + "[prefetch]\npredict = true\n",
    )
    index = index_of(cli)
    now = time.time()
    work_then_step(index, now)
    index.record_use("checkpoints", "c.bin", at=now - 600)  # C at work for ten minutes now
    index.close()
    # Another prompt's loads of C begin nothing: the use is recorded, nothing prefetched.
    busy = cli("--json", "touch", "--prefetch", "c.bin")
    assert busy.code == 0, busy.stderr
    assert busy.json()["data"] == {"touched": ["checkpoints/c.bin"], "prefetch": None}
    # What the ComfyUI node runs as a workflow loads A: the use, then what comes next; while
    # another prefetch runs (cron's), the launch waits for the next batch.
    with FileLock(cli.root / ".cmcache" / "prefetch.lock"):
        held = cli("--json", "touch", "--prefetch", "a.bin")
    assert held.code == 0, held.stderr
    assert held.json()["data"]["prefetch"] == {"skipped": "another prefetch is running"}
    done = cli("--json", "touch", "--prefetch", "a.bin")
    assert done.code == 0, done.stderr
    data = done.json()["data"]
    assert data["touched"] == ["checkpoints/a.bin"]
    assert "checkpoints/b.bin" in data["prefetch"]["downloaded"]  # (A, missing here, may come)
    assert data["prefetch"]["reasons"]["checkpoints/b.bin"] == (
        "predicted: follows a.bin 4 of 4 times"
    )
    fetched = cli.root / "checkpoints" / "b.bin"
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digests["b.bin"]
    # The next batch of the same workflow: that launch has had its prefetch.
    again = cli("--json", "touch", "--prefetch", "a.bin")
    assert again.code == 0 and again.json()["data"]["prefetch"] is None
    # Without prediction, `--prefetch` only records the use.
    cli.write_config(
        f'{FAST_RETRIES}\n[[sources]]\nname = "test"\nurl = "{cli.home / "list.json"}"\n'
    )
    fetched.unlink()
    quiet = cli("--json", "touch", "--prefetch", "a.bin")
    assert quiet.code == 0 and quiet.json()["data"]["prefetch"] is None
    assert not fetched.exists()
    assert cli("--json", "touch", "a.bin").json()["data"] == {"touched": ["checkpoints/a.bin"]}


def test_a_short_session_gap_plans_next_steps_as_soon(cli: Cli) -> None:
    config = '[cache]\nmax_size = "1G"\n[prefetch]\npredict = true\nsession_gap_minutes = 5\n'
    catalog(cli, ["a.bin", "b.bin", "c.bin"], config)
    index = index_of(cli)
    now = time.time()
    work_then_step(index, now, minute=6.0)  # a tenth of the time: A for three minutes
    for week in range(1, 5):
        index.record_use("checkpoints", "c.bin", at=now - 7 * week * DAY - 1200)
    index.close()
    assert cli("touch", "a.bin").code == 0
    plan = cli("--json", "prefetch", "--dry-run").json()["data"]
    assert plan["planned"] == ["checkpoints/b.bin"]
    assert plan["reasons"]["checkpoints/b.bin"] == "predicted: follows a.bin 4 of 4 times"


def test_touch_prefetch_without_an_engine_keeps_the_uses(cli: Cli, origin: Origin) -> None:
    publish(
        cli,
        origin,
        {"a.bin": MiB, "b.bin": MiB},
        extra_config=FAST_RETRIES + 'aria2c = "/nonexistent/aria2c"\n[prefetch]\npredict = true\n',
    )
    index = index_of(cli)
    work_then_step(index, time.time())
    index.close()
    failed = cli("--json", "touch", "--prefetch", "a.bin")
    assert failed.code == 5, failed.stderr
    envelope = failed.json()
    assert envelope["status"] == "partial" and envelope["exit_code"] == 5
    assert envelope["data"]["touched"] == ["checkpoints/a.bin"]
    assert envelope["data"]["prefetch"]["downloaded"] == []
    assert [e["ref"] for e in envelope["errors"]] == ["checkpoints/b.bin"]
    assert "aria2c" in envelope["errors"][0]["message"]
    with sqlite3.connect(cli.root / ".cmcache" / "index.sqlite3") as db:
        (used,) = db.execute("SELECT last_used FROM usage WHERE filename = 'a.bin'").fetchone()
    assert time.time() - used < 60  # the use is recorded
