"""The cluster as a swarm: `serve`'s upload cap (``[cluster] serve_rate``)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import requests
from clustering import SECRET, MiB, Node, join
from conftest import Cli
from origin import Origin


def test_finished_bytes_follow_the_piece_bitfield() -> None:
    from cmcache.core.pieces import Pieces

    pieces = Pieces.parse("e8", 10, 45)  # 11101000: pieces 0-2 and 4 (the short last one)
    assert pieces is not None
    assert [pieces.ready_until(o) for o in (0, 9, 25, 30, 35, 44, 45)] == [
        30,
        30,
        30,
        30,
        35,
        45,
        45,
    ]
    assert Pieces.parse("zz", 10, 45) is None  # not hex
    assert Pieces.parse("e0", 10, 100) is None  # too few bits for 10 pieces
    assert Pieces.parse("", 0, 0) is None  # aria2 does not know the size yet


def test_a_download_being_checked_is_read_from_staging_then_from_its_placed_file(
    tmp_path: Path,
) -> None:
    """Its last pieces go while this node checks it (readers check every byte themselves);
    once moved into place the placed file is read; once dropped, nothing."""
    from cmcache.adapters.cluster.server import _Arrivals
    from cmcache.core.pieces import CHECKING, Growing

    staging, final = tmp_path / "m.bin.incomplete", tmp_path / "m.bin"
    staging.write_bytes(b"abcdefgh")
    placed: list[Path] = []
    arrivals = _Arrivals(
        Growing(staging, 8, lambda _offset: CHECKING), lambda: placed[0] if placed else None, 0
    )
    assert asyncio.run(arrivals.ready(6, 8)) == 8  # not held back for the check
    assert arrivals.read(6, 2) == b"gh"
    staging.rename(final)  # passed its check and was placed
    placed.append(final)
    assert arrivals.read(0, 3) == b"abc"
    assert arrivals.path == final
    dropped = _Arrivals(Growing(staging, 8, lambda _offset: CHECKING), lambda: None, 0)
    assert dropped.read(0, 3) == b""  # failed its check: removed, never read



def test_a_relay_parent_is_the_nearest_node_before_it_that_serves() -> None:
    from cmcache.core.peers import relay_parent

    line = ["root", "a", "b", "c", "d", "e", "f"]
    everyone = set(line)
    assert [relay_parent(line, i, 2, everyone) for i in range(1, 7)] == [
        "root", "root", "a", "a", "b", "b"
    ]
    assert [relay_parent(line, i, 1, everyone) for i in range(1, 4)] == ["root", "a", "b"]
    assert relay_parent(line, 5, 2, everyone - {"b"}) == "root"  # b gone: its parent
    assert relay_parent(line, 3, 2, {"b", "d"}) == "b"  # no ancestor: the nearest before it
    assert relay_parent(line, 3, 2, {"d", "e"}) is None  # never one after it
    assert relay_parent(line, 0, 2, everyone) is None
    assert relay_parent(line, 9, 2, everyone) is None  # a place past the line read


def test_serve_rate_is_validated(cli: Cli) -> None:
    assert cli("config", "set", "cluster.serve_rate", "24M").code == 0
    assert 'serve_rate = "24M"' in cli.config.read_text()
    for bad in ("fast", "-1M", "24Q"):
        result = cli("config", "set", "cluster.serve_rate", bad)
        assert result.code == 3 and "cluster.serve_rate" in result.stderr, bad
    cli.write_config('[cluster]\nserve_rate = "lots"\n')
    result = cli("list")
    assert result.code == 3 and "cluster.serve_rate" in result.stderr


def test_serve_rate_caps_all_readers_together(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    size, rate = 3 * MiB, 2 * MiB
    join(nodes[:1], origin, redis_url, {"capped.bin": size}, extra=f'serve_rate = "{rate}"\n')
    assert node.cli("pull", "capped.bin").code == 0
    url = peer_url(node.url, SECRET, "checkpoints", "capped.bin")
    got: list[int] = []

    def read() -> None:
        got.append(len(requests.get(url, timeout=60).content))

    readers = [threading.Thread(target=read) for _ in range(2)]
    started = time.monotonic()
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    took = time.monotonic() - started
    assert got == [size, size]
    # Two readers share one cap: 6 MiB at 2 MiB/s is 3 s (one slice may go before its turn).
    assert 2 * size / rate * 0.85 <= took <= 2 * size / rate * 1.8, took


def _ranged(url: str, first: int, last: int) -> requests.Response:
    return requests.get(url, headers={"Range": f"bytes={first}-{last}"}, timeout=30)


def test_a_node_still_fetching_serves_finished_pieces_and_holds_missing_ones(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    from cmcache.adapters.cluster.server import HOLD, peer_url

    node, size = nodes[0], 8 * MiB
    join(nodes[:1], origin, redis_url, {"grow.bin": size})
    origin.fault("files/grow.bin", total_rate=1 * MiB)
    data = (origin.folder / "files" / "grow.bin").read_bytes()
    url = peer_url(node.url, SECRET, "checkpoints", "grow.bin")
    pull = node.cli.popen("pull", "grow.bin")
    deadline = time.monotonic() + 30
    head = _ranged(url, 0, 65535)
    while head.status_code != 206 and time.monotonic() < deadline:
        assert head.status_code in (404, 503), head.status_code
        time.sleep(0.2)
        head = _ranged(url, 0, 65535)
    assert head.status_code == 206 and head.content == data[:65536]
    assert head.headers["Content-Range"] == f"bytes 0-65535/{size}"
    assert pull.poll() is None  # served while the pull still runs
    asked = time.monotonic()
    tail = _ranged(url, size - 100, size - 1)  # the last piece comes last: held, then 503
    assert tail.status_code == 503 and time.monotonic() - asked >= HOLD * 0.9
    assert pull.poll() is None
    _out, err = pull.communicate(timeout=120)
    assert pull.returncode == 0, err
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content == data  # now the placed file


def test_bytes_of_a_download_that_failed_its_check_are_never_served(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node, size = nodes[0], 2 * MiB
    join(nodes[:1], origin, redis_url, {"bad.bin": size})
    origin.fault("files/bad.bin", corrupt=True, total_rate=1 * MiB)
    url = peer_url(node.url, SECRET, "checkpoints", "bad.bin")
    pull = node.cli.popen("pull", "bad.bin")
    seen: list[int] = []
    while pull.poll() is None:
        seen.append(_ranged(url, 0, 1023).status_code)
        time.sleep(0.2)
    assert pull.returncode != 0  # the check failed
    assert 206 in seen  # served while it arrived (the reader's own check judges it)
    for first in (0, size // 2 - 10):
        assert _ranged(url, first, first + 1023).status_code == 404
