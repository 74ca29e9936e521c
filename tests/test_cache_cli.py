"""The local cache through the CLI: uses, prune, pins, prefetch, path, verify, scan."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from conftest import Cli
from origin import Origin
from pulling import FAST_RETRIES, file_sha, publish, wait_for

from cmcache.adapters.storage.index import Index

MiB = 1 << 20


def _final(cli: Cli, name: str, folder: str = "checkpoints") -> object:
    return cli.root / folder / name


def _index(cli: Cli) -> Index:
    return Index(cli.root / ".cmcache" / "index.sqlite3")


def test_prune_removes_least_recently_used_first(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB, "b.bin": MiB, "c.bin": MiB})
    assert cli("pull", "a.bin", "b.bin", "c.bin").code == 0
    for name in ("b.bin", "a.bin", "c.bin"):  # b is now the least recently used
        assert cli("touch", name).code == 0
        time.sleep(0.01)
    result = cli("--json", "prune", "--max-size", "1.5M", "--keep-days", "0")
    assert result.code == 0, result.stderr
    data = result.json()["data"]
    assert [r["filename"] for r in data["removed"]] == ["b.bin", "a.bin"]
    assert data["freed"] == 2 * MiB and data["managed_size"] == MiB
    assert not (cli.root / "checkpoints" / "b.bin").exists()
    assert (cli.root / "checkpoints" / "c.bin").exists()


def test_pins_and_recent_use_protect_and_say_so(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB, "b.bin": MiB})
    assert cli("pull", "a.bin", "b.bin").code == 0
    assert cli("pin", "a.bin").code == 0
    recent = cli("prune", "--max-size", "0")  # keep_days = 7 protects both
    assert recent.code == 0 and "keep the cache above its target" in recent.stderr
    result = cli("--json", "prune", "--max-size", "0", "--keep-days", "0")
    assert [r["filename"] for r in result.json()["data"]["removed"]] == ["b.bin"]
    assert (cli.root / "checkpoints" / "a.bin").exists()
    listed = cli("--json", "list", "--cached").json()["data"]["models"]
    assert [(m["ref"], m["state"]) for m in listed] == [("checkpoints/a.bin", "pinned")]
    assert cli("unpin", "a.bin").code == 0
    cli("prune", "--max-size", "0", "--keep-days", "0")
    assert not (cli.root / "checkpoints" / "a.bin").exists()


def test_unmanaged_files_are_never_touched(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB})
    mine = cli.root / "checkpoints" / "mine.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"user data")
    assert cli("pull", "a.bin").code == 0
    assert cli("prune", "--keep-days", "0").code == 0
    assert mine.read_bytes() == b"user data"
    assert not (cli.root / "checkpoints" / "a.bin").exists()


def test_a_managed_file_changed_by_the_user_is_left_alone(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB})
    assert cli("pull", "a.bin").code == 0
    (cli.root / "checkpoints" / "a.bin").write_bytes(b"edited by hand")
    result = cli("prune", "--keep-days", "0")
    assert result.code == 0 and "left alone" in result.stderr
    assert (cli.root / "checkpoints" / "a.bin").read_bytes() == b"edited by hand"


def test_dry_run_changes_nothing(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB})
    assert cli("pull", "a.bin").code == 0
    result = cli("--json", "prune", "--dry-run", "--keep-days", "0")
    assert [r["filename"] for r in result.json()["data"]["removed"]] == ["a.bin"]
    assert (cli.root / "checkpoints" / "a.bin").exists()


def test_prune_without_any_target_is_a_usage_error(cli: Cli) -> None:
    result = cli("prune")
    assert result.code == 2 and "--max-size" in result.stderr


def test_prune_uses_the_config_budget(cli: Cli, origin: Origin) -> None:
    publish(
        cli,
        origin,
        {"a.bin": MiB, "b.bin": MiB},
        extra_config=FAST_RETRIES + '[cache]\nmax_size = "1M"\nkeep_days = 0\n',
    )
    assert cli("pull", "a.bin", "b.bin").code == 0
    result = cli("--json", "prune")
    assert result.code == 0 and result.json()["data"]["managed_size"] == MiB


def test_empty_subfolders_are_removed(cli: Cli, origin: Origin) -> None:
    origin.add_random("x/deep.bin", MiB)
    assert cli("pull", "--folder", "controlnet", origin.url("x/deep.bin")).code == 0
    listing = cli.home / "l.json"
    listing.write_text('{"controlnet": {"SDXL/deep.bin": "' + origin.url("x/deep.bin") + '"}}')
    cli.write_config(f'[[sources]]\nname = "s"\nurl = "{listing}"\n')
    assert cli("sync").code == 0
    assert cli("pull", "SDXL/deep.bin").code == 0
    assert (cli.root / "controlnet" / "SDXL" / "deep.bin").exists()
    assert cli("prune", "--keep-days", "0").code == 0
    assert not (cli.root / "controlnet" / "SDXL").exists()
    assert (cli.root / "controlnet").is_dir()


def test_a_crash_between_index_update_and_unlink_is_reconciled(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB, "b.bin": MiB})
    assert cli("pull", "a.bin", "b.bin").code == 0
    index = _index(cli)
    index.mark_removing("checkpoints", "a.bin")  # the process died right after this
    index.close()
    (cli.root / "checkpoints" / "b.bin").unlink()  # and this one vanished behind our back
    result = cli("--json", "prune", "--max-size", "100G")
    assert result.code == 0
    assert not (cli.root / "checkpoints" / "a.bin").exists()
    assert "b.bin was already gone" in result.stderr
    assert result.json()["data"]["managed_size"] == 0


def test_path_downloads_on_demand_and_no_download_does_not(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"p.bin": MiB})
    refused = cli("path", "--no-download", "p.bin")
    assert refused.code != 0 and refused.stdout == ""
    assert origin.log == []
    result = cli("path", "p.bin")
    assert result.code == 0, result.stderr
    path = cli.root / "checkpoints" / "p.bin"
    assert result.stdout.strip() == str(path) and file_sha(path) == digests["p.bin"]
    seen = len(origin.log)
    again = cli("path", "--no-download", "p.bin")
    assert again.code == 0 and again.stdout.strip() == str(path)
    assert len(origin.log) == seen


def test_verify_finds_a_flipped_byte_and_fix_repairs_it(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"v.bin": 2 * MiB})
    assert cli("pull", "v.bin").code == 0
    path = cli.root / "checkpoints" / "v.bin"
    data = bytearray(path.read_bytes())
    data[12345] ^= 0x01
    path.write_bytes(bytes(data))
    found = cli("--json", "verify")
    assert found.code == 7
    assert found.json()["data"]["checked"][0]["status"] == "bad"
    fixed = cli("--json", "verify", "--fix")
    assert fixed.code == 0, fixed.stderr
    assert fixed.json()["data"]["fixed"] == ["checkpoints/v.bin"]
    assert file_sha(path) == digests["v.bin"]
    assert cli("verify", "v.bin").code == 0


def test_scan_adopts_matching_files_only(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"s1.bin": MiB, "s2.bin": MiB})
    folder = cli.root / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "s1.bin").write_bytes((origin.folder / "files" / "s1.bin").read_bytes())
    (folder / "s2.bin").write_bytes(b"not the model")
    result = cli("--json", "scan")
    assert result.code == 0
    assert result.json()["data"]["adopted"] == ["checkpoints/s1.bin"]
    assert result.json()["data"]["skipped"][0]["ref"] == "checkpoints/s2.bin"
    assert file_sha(folder / "s1.bin") == digests["s1.bin"]
    assert cli("--json", "pull", "s1.bin").json()["data"]["results"][0]["outcome"] == "cached"
    assert origin.log == []


def test_prefetch_fills_its_list_within_the_budget_by_evicting_lru(
    cli: Cli, origin: Origin
) -> None:
    publish(
        cli,
        origin,
        {"old.bin": 2 * MiB, "p1.bin": 2 * MiB, "p2.bin": 2 * MiB},
        extra_config=FAST_RETRIES + '[cache]\nmax_size = "5M"\nkeep_days = 0\n'
        '[prefetch]\nmodels = ["p1.bin", "p2.bin"]\n',
    )
    assert cli("pull", "old.bin").code == 0
    result = cli("prefetch")
    assert result.code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("prefetch: 0 present, downloaded 2")
    assert "evicted 1" in result.stdout
    assert not (cli.root / "checkpoints" / "old.bin").exists()
    assert (cli.root / "checkpoints" / "p1.bin").exists()
    again = cli("prefetch")
    assert "prefetch: 2 present, downloaded 0" in again.stdout


def test_prefetch_skips_what_does_not_fit(cli: Cli, origin: Origin) -> None:
    publish(
        cli,
        origin,
        {"p1.bin": 2 * MiB, "p2.bin": 2 * MiB},
        extra_config=FAST_RETRIES + '[cache]\nmax_size = "3M"\n'
        '[prefetch]\nmodels = ["p1.bin", "p2.bin"]\n',
    )
    result = cli("prefetch")
    assert result.code == 0
    assert "skipped checkpoints/p2.bin" in result.stderr and "skipped 1" in result.stdout


def test_prefetch_adds_the_most_used_models(cli: Cli, origin: Origin) -> None:
    publish(
        cli,
        origin,
        {"hot.bin": MiB, "cold.bin": MiB},
        extra_config=FAST_RETRIES + "[prefetch]\npopular = 1\n",
    )
    for _ in range(3):
        cli("touch", "hot.bin")
    cli("touch", "cold.bin")
    result = cli("--json", "prefetch")
    assert result.json()["data"]["downloaded"] == ["checkpoints/hot.bin"]


def test_a_second_concurrent_prefetch_steps_aside(cli: Cli, origin: Origin) -> None:
    publish(
        cli,
        origin,
        {"slow.bin": 8 * MiB},
        extra_config=FAST_RETRIES + '[prefetch]\nmodels = ["slow.bin"]\n',
    )
    origin.fault("files/slow.bin", rate=2 * MiB)
    first = cli.popen("prefetch")
    wait_for(lambda: origin.sent_so_far("files/slow.bin") > 0, what="the first prefetch")
    second = cli("prefetch")
    assert second.code == 0 and "another prefetch is running" in second.stdout
    assert first.wait(60) == 0


def test_status_reports_usage_against_the_budget(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB}, extra_config=FAST_RETRIES + '[cache]\nmax_size = "10M"\n')
    assert cli("pull", "a.bin").code == 0
    data = cli("--json", "status").json()["data"]
    assert data["cache"] == {"managed_size": MiB, "files": 1, "max_size": 10 * MiB}


def test_the_use_log_keeps_only_the_prefetch_window_and_totals_stay(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3", use_log_days=30)
    now = time.time()
    for days_ago in (90, 60, 35, 10, 1):
        index.record_use("checkpoints", "a.bin", at=now - days_ago * 86400)
    assert index.use_log_size() == 2  # 10 and 1 days ago: older rows were trimmed as it went
    assert index.most_used(now - 30 * 86400, 5) == [("checkpoints", "a.bin", 2)]
    index.close()
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        assert db.execute("SELECT count FROM usage").fetchone() == (5,)  # the total stays
