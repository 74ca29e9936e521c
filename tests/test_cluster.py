"""Several machines, one cache: a real redis-server, nodes on 127.0.0.2-4 each with its own
home, root and `cmcache serve`, one origin on 127.0.0.1 counting bytes."""

from __future__ import annotations

import signal
import subprocess
import time

import requests
from clustering import (
    SECRET,
    MiB,
    Node,
    join,
    origin_bytes,
)
from origin import Origin
from pulling import file_sha, wait_for


def test_three_concurrent_pulls_cost_the_origin_one_copy(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    size = 24 * MiB
    digests = join(nodes, origin, redis_url, {"big.bin": size}, rate=4 * MiB)
    pulls = [n.cli.popen("pull", "big.bin") for n in nodes]
    for process in pulls:
        _out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    for node in nodes:
        assert file_sha(node.cli.root / "checkpoints" / "big.bin") == digests["big.bin"]
    assert origin_bytes(origin, "big.bin") <= size * 1.1  # one copy (+ probes)


def test_a_model_a_peer_holds_comes_from_that_peer(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    first, second = nodes[0], nodes[1]
    digests = join(nodes[:2], origin, redis_url, {"held.bin": 8 * MiB})
    assert first.cli("pull", "held.bin").code == 0
    before = origin_bytes(origin, "held.bin")
    result = second.cli("pull", "held.bin")
    assert result.code == 0, result.stderr
    assert origin_bytes(origin, "held.bin") == before  # not one byte more from the origin
    assert file_sha(second.cli.root / "checkpoints" / "held.bin") == digests["held.bin"]
    metrics = second.cli("metrics").stdout
    assert 'cmcache_downloaded_bytes_total{source="peer"} 8.388608e+06' in metrics


def test_a_peer_dying_mid_transfer_costs_a_fallback_not_a_failure(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    first, second = nodes[0], nodes[1]
    size = 32 * MiB
    digests = join(nodes[:2], origin, redis_url, {"frail.bin": size})
    assert first.cli("pull", "frail.bin").code == 0
    before = origin_bytes(origin, "frail.bin")
    process = second.cli.popen("pull", "--max-speed", "4M", "--split", "1", "frail.bin")
    wait_for(lambda: _done(second) > 4 * MiB, what="4 MiB from the peer")  # aria2's own count
    first.stop(signal.SIGKILL)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "finishing from the origin" in err
    assert file_sha(second.cli.root / "checkpoints" / "frail.bin") == digests["frail.bin"]
    assert origin_bytes(origin, "frail.bin") - before < size  # resumed, not from zero


def _done(node: Node) -> int:
    downloads = node.cli("--json", "status").json()["data"]["downloads"]
    return sum(int(d["done"]) for d in downloads)


def test_redis_down_pulls_still_work_and_cluster_commands_exit_5(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    node = nodes[0]
    join(nodes[:1], origin, redis_url, {"solo.bin": MiB}, serve=False)
    port = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    subprocess.run(
        ["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True
    )
    started = time.monotonic()
    result = node.cli("pull", "solo.bin")
    assert result.code == 0, result.stderr
    assert "using the origins" in result.stderr
    assert time.monotonic() - started < 30
    assert node.cli("cluster", "status").code == 5


def test_serve_wants_the_secret_and_serves_only_managed_verified_files(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    join(nodes[:1], origin, redis_url, {"s.bin": 2 * MiB})
    assert node.cli("pull", "s.bin").code == 0
    good = peer_url(node.url, SECRET, "checkpoints", "s.bin")
    assert requests.get(good.split("?")[0], timeout=10).status_code == 401
    assert (
        requests.get(peer_url(node.url, "wrong", "checkpoints", "s.bin"), timeout=10).status_code
        == 401
    )
    ranged = requests.get(good, headers={"Range": "bytes=0-99"}, timeout=10)
    assert ranged.status_code == 206 and len(ranged.content) == 100
    (node.cli.root / "checkpoints" / "mine.bin").write_bytes(b"unmanaged")
    for folder, name in (
        ("checkpoints", "mine.bin"),
        ("checkpoints", "../../config.toml"),
        (".cmcache", "index.sqlite3"),
    ):
        response = requests.get(peer_url(node.url, SECRET, folder, name), timeout=10)
        assert response.status_code == 404, (folder, name)
    assert requests.get(f"{node.url}/v1/models/", timeout=10).status_code in (401, 404, 405)


def test_prune_keeps_a_file_while_a_peer_downloads_it(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    # "[" in the name (the origin's URL stays plain); readers may pause 60 s (prune is slow
    # on a loaded machine) before serve cuts them off.
    join(nodes[:1], origin, redis_url, {"p1.bin": 16 * MiB}, serve=False)
    listing = node.cli.home / "list.json"
    listing.write_text(
        listing.read_text().replace('"filename": "p1.bin"', '"filename": "p[1].bin"')
    )
    node.cli.write_config(node.cli.config.read_text().replace("timeout = 10", "timeout = 60"))
    assert node.cli("sync").code == 0
    node.start()
    assert node.cli("pull", "p[1].bin").code == 0
    with requests.get(
        peer_url(node.url, SECRET, "checkpoints", "p[1].bin"), stream=True, timeout=30
    ) as slow:
        next(slow.iter_content(64 * 1024))  # the transfer has begun; the socket buffers fill
        pruned = node.cli("prune", "--keep-days", "0")
        assert pruned.code == 0 and "a peer is downloading it" in pruned.stderr
        assert (node.cli.root / "checkpoints" / "p[1].bin").exists()
        body = b"".join(slow.iter_content(1 << 20))
    assert len(body) > 0
    wait_for(
        lambda: (
            node.cli("prune", "--keep-days", "0").code == 0
            and not (node.cli.root / "checkpoints" / "p[1].bin").exists()
        ),
        what="the later prune",
    )


def test_a_dead_fetch_lock_holder_is_taken_over(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    import redis

    node = nodes[0]
    digests = join(nodes[:1], origin, redis_url, {"l.bin": MiB}, serve=False)
    # A node took the lock and died: it stops extending it, and it expires.
    redis.Redis.from_url(redis_url).set("cmcache:fetch:checkpoints/l.bin", "gone/1", px=15000)
    started = time.monotonic()
    result = node.cli("pull", "l.bin")
    assert result.code == 0, result.stderr
    assert "another node is fetching it" in result.stderr
    assert time.monotonic() - started >= 2
    assert file_sha(node.cli.root / "checkpoints" / "l.bin") == digests["l.bin"]


def test_cluster_status_shows_nodes_holders_and_budget(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    join(nodes[:2], origin, redis_url, {"st.bin": MiB})
    assert nodes[0].cli("pull", "st.bin").code == 0
    data = nodes[1].cli("--json", "cluster", "status").json()["data"]
    assert set(data["nodes"]) == {"127.0.0.2", "127.0.0.3"}
    assert data["holders"]["checkpoints/st.bin"] == ["127.0.0.2"]
    assert data["origin_budget"]["127.0.0.3"] == 100
    assert SECRET not in nodes[1].cli("config", "show").stdout
