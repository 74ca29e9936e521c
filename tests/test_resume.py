"""Resuming an interrupted pull: what the control file vouches for, what is fetched again."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import Cli
from origin import Origin, Request
from pulling import file_sha, publish, wait_for

from cmcache.adapters.aria2.control import Partial, read_partial

MiB = 1 << 20


def interrupted(cli: Cli, origin: Origin, name: str, size: int, split: int) -> Partial:
    """Start a pull of ``name``, Ctrl-C it at about 30 %; returns what its control file says."""
    process = cli.popen("pull", "--split", str(split), name)
    wait_for(lambda: origin.sent_so_far(f"files/{name}") > 0.3 * size, what="30 % sent")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    controls = list((cli.root / ".cmcache" / "staging").glob(f"*{name}*.aria2"))
    assert len(controls) == 1, controls
    partial = read_partial(controls[0])
    assert partial is not None and partial.total == size
    return partial


def peak_connections(requests: list[Request], grace: float = 0.05) -> int:
    """Most body-carrying GETs at once (a connection's close is noticed a chunk late)."""
    events: list[tuple[float, int]] = []
    for r in requests:
        if r.method == "GET" and r.sent > 64 * 1024 and r.ended - grace > r.started:
            events += [(r.started, 1), (r.ended - grace, -1)]
    now = peak = 0
    for _, delta in sorted(events):
        now += delta
        peak = max(peak, now)
    return peak


def test_the_control_file_says_which_bytes_are_on_disk(cli: Cli, origin: Origin) -> None:
    size = 8 * MiB
    publish(cli, origin, {"c.bin": size})
    origin.fault("files/c.bin", rate=2 * MiB)
    partial = interrupted(cli, origin, "c.bin", size, split=4)
    staging = next((cli.root / ".cmcache" / "staging").glob("*c.bin.incomplete"))
    expected, got = (origin.folder / "files" / "c.bin").read_bytes(), staging.read_bytes()
    vouched = 0
    for index, done in enumerate(partial.done):
        start = index * partial.piece_length
        length = partial.piece_length if done else partial.started.get(index, 0)
        assert got[start : start + length] == expected[start : start + length], index
        vouched += length
    assert 0 < vouched == partial.have < size and partial.missing == size - vouched
    assert 1 <= partial.unfinished_runs <= 4
    assert read_partial(Path(str(staging) + ".missing")) is None
    staging.with_name(staging.name + ".aria2").write_bytes(b"\0\1garbage")
    assert read_partial(staging.with_name(staging.name + ".aria2")) is None


def test_a_resumed_pull_fetches_little_more_than_the_missing_bytes(
    cli: Cli, origin: Origin
) -> None:
    # 16 MiB in 16 segments: aria2 makes 8 (a segment is at least twice min-split-size), so
    # the resume has fewer stretches left than the split asked for.
    size = 16 * MiB
    digests = publish(cli, origin, {"r.bin": size})
    origin.fault("files/r.bin", rate=MiB)
    partial = interrupted(cli, origin, "r.bin", size, split=16)
    assert partial.unfinished_runs < 16
    before = len(origin.log)
    origin.fault("files/r.bin", rate=MiB)
    result = cli("pull", "--split", "16", "r.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "r.bin") == digests["r.bin"]
    resumed = [r for r in origin.log[before:] if r.path == "/files/r.bin"]
    fetched = sum(r.sent for r in resumed if r.method == "GET")
    assert fetched <= 1.05 * partial.missing, (fetched, partial.missing)
    # One connection per stretch still missing: none cut in two, nothing fetched twice.
    assert peak_connections(resumed) <= partial.unfinished_runs
