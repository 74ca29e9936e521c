"""Bundles in a cluster: members peers already hold come from them, and the archive from the
origin only when a member is missing from the peers or one of them sends bad bytes, and by one
node at a time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import time
import zipfile

from clustering import Node, rot
from origin import Origin, random_bytes
from pulling import FAST_RETRIES

KiB = 1024
MEMBERS = {
    "loras/pack/a.safetensors": random_bytes(768 * KiB, seed=1),
    "loras/pack/b.safetensors": random_bytes(512 * KiB, seed=2),
    "loras/pack/c.safetensors": random_bytes(256 * KiB, seed=3),
}
ARCHIVE = "b/pack.zip"


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:  # stored, as `cmcache publish` writes bundles
        for ref, data in members.items():
            zf.writestr(ref, data)
    return buffer.getvalue()


def join_bundle(
    nodes: list[Node], origin: Origin, redis_url: str, members: dict[str, bytes] = MEMBERS
) -> None:
    """The origin serves one zip of ``members``; every node lists it and runs `serve`."""
    archive = _archive(members)
    origin.add(ARCHIVE, archive)
    entry = {
        "bundle": "pack",
        "url": origin.url(ARCHIVE),
        "format": "zip",
        "sha256": hashlib.sha256(archive).hexdigest(),
        "size": len(archive),
        "members": [
            {
                "folder": ref.split("/", 1)[0],
                "filename": ref.split("/", 1)[1],
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
            for ref, data in members.items()
        ],
    }
    for node in nodes:
        listing = node.cli.home / "list.json"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps({"schema": 1, "models": [entry]}))
        node.cli.write_config(
            f'{FAST_RETRIES}[[sources]]\nname = "team"\nurl = "{listing}"\n'
            f'[cluster]\nredis = "{redis_url}"\nnode = "{node.host}"\n'
            f'serve = "{node.host}:{node.port}"\norigin_rate = "100/minute"\n'
        )
        assert node.cli("sync").code == 0
        node.start()


def archive_requests(origin: Origin) -> int:
    return len(origin.requests_for(ARCHIVE))


def downloaded(node: Node, source: str) -> float:
    """Bytes the node's metrics count as downloaded from ``source`` (peer or origin)."""
    metrics = node.cli("metrics").stdout
    found = re.search(rf'cmcache_downloaded_bytes_total{{source="{source}"}} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


def holds_every_member(node: Node) -> bool:
    return all((node.cli.root / ref).read_bytes() == data for ref, data in MEMBERS.items())


def test_members_peers_hold_come_from_them_and_nodes_feed_each_other(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    first, second, third = nodes
    join_bundle(nodes, origin, redis_url)
    assert first.cli("pull", "pack").code == 0
    assert archive_requests(origin) >= 1
    before = archive_requests(origin)
    result = second.cli("--json", "pull", "pack")
    assert result.code == 0, result.stderr
    assert archive_requests(origin) == before  # not one request for the archive
    assert holds_every_member(second)
    assert downloaded(second, "peer") == sum(len(d) for d in MEMBERS.values())
    assert downloaded(second, "origin") == 0
    assert second.cli("verify").code == 0  # placed and recorded as managed, verified files
    # The second node announced its members: with the first gone, it serves the third.
    first.stop(signal.SIGKILL)
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for ref in MEMBERS:
        assert second.host in client.hgetall(f"cmcache:holders:{ref}")
    client.delete(f"cmcache:node:{first.host}")  # its heartbeat would lapse; do not wait
    result = third.cli("pull", "loras/pack/b.safetensors")  # a member brings its bundle
    assert result.code == 0, result.stderr
    assert archive_requests(origin) == before
    assert holds_every_member(third)


def test_a_peer_with_a_rotten_member_costs_the_archive_not_the_pull(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    first, second = nodes[0], nodes[1]
    join_bundle(nodes[:2], origin, redis_url)
    assert first.cli("pull", "pack").code == 0
    rot(first.cli.root / "loras/pack/b.safetensors")  # size, inode and mtime unchanged
    before = archive_requests(origin)
    result = second.cli("pull", "pack")
    assert result.code == 0, result.stderr
    assert "bad bytes from 127.0.0.2" in result.stderr
    assert "fetching the archive" in result.stderr
    assert archive_requests(origin) > before  # the archive brought the rotten member
    assert holds_every_member(second)
    assert downloaded(second, "peer") == len(MEMBERS["loras/pack/a.safetensors"]) + len(
        MEMBERS["loras/pack/c.safetensors"]
    )
    assert second.cli("verify").code == 0
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    holders = client.hgetall("cmcache:holders:loras/pack/b.safetensors")
    assert first.host not in holders and second.host in holders


def test_members_only_partly_held_come_from_the_archive(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    first, second = nodes[0], nodes[1]
    join_bundle(nodes[:2], origin, redis_url)
    assert first.cli("pull", "pack").code == 0
    first.cli("touch", "loras/pack/a.safetensors", "loras/pack/b.safetensors")
    budget = str(sum(len(MEMBERS[f"loras/pack/{n}.safetensors"]) for n in "ab"))
    pruned = first.cli("--json", "prune", "--max-size", budget, "--keep-days", "0")
    assert [r["filename"] for r in pruned.json()["data"]["removed"]] == ["pack/c.safetensors"]
    before = archive_requests(origin)
    result = second.cli("pull", "pack")
    assert result.code == 0, result.stderr
    assert archive_requests(origin) > before
    assert holds_every_member(second)
    assert downloaded(second, "peer") == 0  # the archive brings them all: peers are not asked


def test_a_vanished_peer_costs_the_archive_not_the_pull(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    import redis

    first, second = nodes[0], nodes[1]
    join_bundle(nodes[:2], origin, redis_url)
    assert first.cli("pull", "pack").code == 0
    first.stop(signal.SIGKILL)  # gone, but its heartbeat has not lapsed yet
    redis.Redis.from_url(redis_url).expire(f"cmcache:node:{first.host}", 60)
    before = archive_requests(origin)
    result = second.cli("pull", "pack")
    assert result.code == 0, result.stderr
    assert "did not come from peers; fetching the archive" in result.stderr
    assert archive_requests(origin) > before
    assert holds_every_member(second)
    assert downloaded(second, "peer") == 0


def test_many_members_do_not_each_scan_redis_for_live_nodes(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    import redis

    many = {f"loras/many/m{i:03}.safetensors": random_bytes(2 * KiB, seed=i) for i in range(120)}
    first, second = nodes[0], nodes[1]
    join_bundle(nodes[:2], origin, redis_url, many)
    assert first.cli("pull", "pack").code == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.config_resetstat()
    result = second.cli("pull", "pack")
    assert result.code == 0, result.stderr
    assert all((second.cli.root / ref).read_bytes() == data for ref, data in many.items())
    scans = int(client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))
    # One look at the live nodes takes about 12 SCANs here (about 125 keys): 48 in all with
    # the look reused for a second, 2,880 with a fresh look for every member's lookup.
    assert scans < 1000, scans


def archive_bytes(origin: Origin) -> int:
    """Bytes of the archive the origin sent, over every request."""
    return sum(r.sent for r in origin.requests_for(ARCHIVE, "GET"))


def archive_turn(redis_url: str) -> str:
    """The node whose turn it is to fetch a bundle's archive from its origin ("" if none)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    values = [client.get(key) for key in client.keys("cmcache:fetch:bundles/*")]
    return next((str(v).split("/", 1)[0] for v in values if v), "")


def test_two_nodes_pulling_an_unheld_bundle_at_once_fetch_its_archive_once(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    first, second = nodes[0], nodes[1]
    join_bundle(nodes[:2], origin, redis_url)
    size = len(_archive(MEMBERS))
    origin.fault(ARCHIVE, total_rate=size // 4)  # about 4 s: both pulls start within it
    pulls = [node.cli.popen("pull", "pack") for node in (first, second)]
    errors = [pull.communicate(timeout=120)[1] for pull in pulls]
    for pull, err in zip(pulls, errors, strict=True):
        assert pull.returncode == 0, err
    assert archive_bytes(origin) <= size * 1.05  # one node fetched it, the other waited
    assert sum("another node is fetching this bundle's archive" in err for err in errors) == 1
    for node in (first, second):
        assert holds_every_member(node)
        assert node.cli("verify").code == 0
    waited = second if "another node is fetching" in errors[1] else first
    assert downloaded(waited, "peer") == sum(len(d) for d in MEMBERS.values())
    assert archive_turn(redis_url) == ""  # released once the members were announced


def test_a_node_that_dies_fetching_the_archive_hands_its_turn_over(
    nodes: list[Node], origin: Origin, redis_url: str
) -> None:
    from conftest import aria2c_pids
    from pulling import wait_for

    first, second = nodes[0], nodes[1]
    join_bundle(nodes[:2], origin, redis_url)
    size = len(_archive(MEMBERS))
    faults = origin.fault(ARCHIVE, total_rate=size // 30)  # it dies long before the end
    leader = first.cli.popen("pull", "pack")
    wait_for(lambda: archive_turn(redis_url) == first.host, what="the first node's turn")
    wait_for(lambda: origin.sent_so_far(ARCHIVE) > 0, what="the archive under way")
    follower = second.cli.popen("pull", "pack")
    time.sleep(2)  # the follower finds the turn taken and waits
    leader.kill()  # the pull, its aria2 and its `serve`: the whole node is gone
    for pid in aria2c_pids(str(first.cli.home)):
        os.kill(pid, signal.SIGKILL)
    first.stop(signal.SIGKILL)
    leader.communicate(timeout=20)
    faults.total_rate = None
    _out, err = follower.communicate(timeout=120)  # the dead node's lock lapses (LOCK_TTL)
    assert follower.returncode == 0, err
    assert "another node is fetching this bundle's archive; waiting" in err
    assert holds_every_member(second)
    assert second.cli("verify").code == 0
