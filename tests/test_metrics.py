"""`cmcache metrics`: Prometheus text format, counted from what the commands really did."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Cli
from origin import Origin
from prometheus_client.parser import text_string_to_metric_families
from pulling import publish


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_hits_misses_bytes_prunes_and_the_last_sync(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    publish(
        cli,
        origin,
        {"m1.bin": 100_000, "m2.bin": 50_000},
        extra_config='[cache]\nmax_size = "1G"\n',
    )
    assert cli("pull", "m1.bin", "m2.bin").code == 0  # two misses
    assert cli("pull", "m1.bin").code == 0  # a hit (the fast path)
    assert cli("path", "m2.bin").code == 0  # a hit
    assert cli("prune", "--keep-days", "0", "--max-size", "60000").code == 0  # removes m1
    textfile = tmp_path / "textfile" / "cmcache.prom"
    assert cli("metrics", "--textfile", str(textfile)).code == 0
    got = samples(textfile.read_text())
    assert got[("cmcache_lookups_total", (("command", "pull"), ("result", "miss")))] == 2
    assert got[("cmcache_lookups_total", (("command", "pull"), ("result", "hit")))] == 1
    assert got[("cmcache_lookups_total", (("command", "path"), ("result", "hit")))] == 1
    assert got[("cmcache_downloaded_bytes_total", (("source", "origin"),))] == 150_000
    assert got[("cmcache_download_seconds_count", ())] == 2
    assert got[("cmcache_prune_removed_files_total", ())] == 1
    assert got[("cmcache_prune_freed_bytes_total", ())] == 100_000
    assert got[("cmcache_managed_bytes", ())] == 50_000
    assert got[("cmcache_budget_bytes", ())] == 1 << 30
    assert got[("cmcache_files", (("state", "managed"),))] == 1
    assert got[("cmcache_last_sync_success", ())] == 1
    assert got[("cmcache_last_sync_age_seconds", ())] < 600
    printed = cli("metrics")
    assert printed.code == 0 and "cmcache_managed_bytes 50000.0" in printed.stdout


def test_metrics_without_any_cache_yet(cli: Cli) -> None:
    result = cli("metrics")
    assert result.code == 0
    assert samples(result.stdout)[("cmcache_managed_bytes", ())] == 0


def test_a_textfile_that_cannot_be_written_is_a_disk_error_naming_it(
    cli: Cli, tmp_path: Path
) -> None:
    folder = tmp_path / "collector"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    places = [folder, Path("/proc/cmcache.prom"), a_file / "cmcache.prom"]
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        places.append(locked / "cmcache.prom")
    for place in places:
        result = cli("metrics", "--textfile", str(place))
        assert result.code == 8, (place, result.stderr)
        assert str(place) in result.stderr and "unexpected" not in result.stderr
    assert "name a file in it" in cli("metrics", "--textfile", str(folder)).stderr
    assert list(folder.iterdir()) == []  # no temporary file left behind
