"""The cluster as a swarm, pulling side: nodes waiting on another node's origin fetch copy from
the nodes still fetching the model at once, and every guarantee of a placed holder holds."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

from clustering import MiB, Node, RedisServer, join, origin_bytes
from conftest import Cli
from origin import Origin
from pulling import file_sha, wait_for

REF = "checkpoints/{}"


def _copying(redis: RedisServer, origin: Origin, node: Node, name: str) -> None:
    """Wait until ``node`` copies ``name`` from peers while the origin has not yet sent it
    whole to anyone and nobody holds it placed: from a node still fetching it."""

    def started() -> bool:
        return node.host in _fetching(redis, name)

    wait_for(started, what=f"{node.host} copying", timeout=60)
    assert origin.sent_so_far(f"files/{name}") < (origin.folder / "files" / name).stat().st_size
    assert redis.client().hgetall(f"cmcache:holders:{REF.format(name)}") == {}


def _fetching(redis: RedisServer, name: str) -> dict[str, str]:
    found: dict[str, str] = redis.client().hgetall(f"cmcache:fetching:{REF.format(name)}")
    return found


def _is_fetching(redis: RedisServer, name: str, host: str) -> bool:
    return host in _fetching(redis, name)


def _follower_copying(
    nodes: list[Node], origin: Origin, redis: RedisServer, name: str, split: str
) -> tuple[dict[str, str], subprocess.Popen[str], subprocess.Popen[str]]:
    """The first node pulls ``name`` (4 MiB) from a slow origin in ``split`` segments, the second
    copies from it while it still fetches; then the origin speeds up. The digests, both pulls."""
    leader, follower = nodes[0], nodes[1]
    digests = join(nodes[:2], origin, redis.url, {name: 4 * MiB})
    faults = origin.fault(f"files/{name}", total_rate=MiB // 8)  # slow while they start
    first = leader.cli.popen("pull", "--split", split, name)
    wait_for(partial(_is_fetching, redis, name, leader.host), what="leader fetching")
    second = follower.cli.popen("pull", name)
    _copying(redis, origin, follower, name)  # not waiting for a placed copy
    faults.total_rate = MiB
    return digests, first, second


def test_a_follower_copies_from_a_node_still_fetching_and_the_origin_sends_it_once(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    follower, size = nodes[1], 4 * MiB
    digests, first, second = _follower_copying(nodes, origin, redis_server, "swarm.bin", "2")
    _out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert file_sha(follower.cli.root / "checkpoints" / "swarm.bin") == digests["swarm.bin"]
    assert origin_bytes(origin, "swarm.bin") <= size * 1.05  # the origin sent it about once
    metrics = follower.cli("metrics").stdout
    assert f'cmcache_downloaded_bytes_total{{source="peer"}} {float(size):e}' in metrics
    assert _fetching(redis_server, "swarm.bin") == {}  # both placed: nobody is fetching


def test_a_partial_holder_that_dies_mid_transfer_costs_a_fallback(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    leader, follower = nodes[0], nodes[1]
    digests, first, second = _follower_copying(nodes, origin, redis_server, "frail.bin", "1")
    leader.stop(signal.SIGKILL)  # its `serve`: the pieces it has are out of reach now
    _out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "finishing from the origin" in err
    assert file_sha(follower.cli.root / "checkpoints" / "frail.bin") == digests["frail.bin"]
    first.communicate(timeout=60)


def test_a_fetching_node_serving_wrong_bytes_is_never_placed(
    nodes: list[Node], origin: Origin, redis_server: RedisServer, tmp_path: Path
) -> None:
    node = nodes[0]
    size = 2 * MiB
    digests = join(nodes[:1], origin, redis_server.url, {"w.bin": size}, serve=False)
    liar = Origin(tmp_path / "liar", host="127.0.0.5").start()
    try:
        liar.add_random("v1/models/checkpoints/w.bin", size, seed=99)  # the size, other bytes
        redis = redis_server.client()
        body = {"url": liar.url(""), "models": 0, "bytes": 0, "seen": time.time()}
        redis.set("cmcache:node:liar", json.dumps({**body, "instance": "x"}), ex=60)
        claim = {"sha256": digests["w.bin"], "size": size, "until": time.time() + 60}
        redis.hset(f"cmcache:fetching:{REF.format('w.bin')}", "liar", json.dumps(claim))
        lock = f"cmcache:fetch:{REF.format('w.bin')}"
        redis.set(lock, "liar/token", px=60_000)  # the liar fetches it from the origin, it says
        pull = node.cli.popen("pull", "w.bin")
        asked = liar.requests_for
        wait_for(lambda: bool(asked("v1/models/checkpoints/w.bin", "GET")), what="a copy")
        redis.delete(lock)  # the liar is gone: the origin's turn is free
        _out, err = pull.communicate(timeout=120)
    finally:
        liar.stop()
    assert pull.returncode == 0, err
    assert "bad bytes from liar" in err
    assert file_sha(node.cli.root / "checkpoints" / "w.bin") == digests["w.bin"]
    assert "liar" not in _fetching(redis_server, "w.bin")  # no longer offered to anyone


def test_all_peers_gone_while_another_node_holds_the_lock_no_second_origin_fetch_at_once(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    leader, followers = nodes[0], nodes[1:]
    size = 4 * MiB
    digests = join(nodes, origin, redis_server.url, {"one.bin": size})
    faults = origin.fault("files/one.bin", total_rate=MiB // 8)  # slow while they start
    first = leader.cli.popen("pull", "--split", "1", "one.bin")  # one origin request
    wait_for(lambda: leader.host in _fetching(redis_server, "one.bin"), what="leader fetching")
    rest = [f.cli.popen("pull", "one.bin") for f in followers]
    _copying(redis_server, origin, followers[0], "one.bin")
    faults.total_rate = MiB
    leader.stop(signal.SIGKILL)  # every peer's source of new pieces is gone
    first.communicate(timeout=120)
    for process, follower in zip(rest, followers, strict=True):
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert file_sha(follower.cli.root / "checkpoints" / "one.bin") == digests["one.bin"]
    fetches = [r for r in origin.requests_for("files/one.bin", "GET") if r.sent > 1]
    leaders = [r for r in fetches if r.sent == size]
    assert leaders, "the leader fetched it whole in one request"
    own = leaders[0]
    during = [r for r in fetches if r is not own and own.started < r.started < own.ended]
    assert during == []  # nobody else went to the origin while the leader held the lock
    # After the leader: one follower (at most) resumes from the origin, the other copies it.
    assert origin_bytes(origin, "one.bin") <= 2 * size + 1024
    peer = [f.cli("metrics").stdout for f in followers]
    assert sum(f'{{source="peer"}} {float(size):e}' in text for text in peer) >= 1


def test_each_follower_copies_from_its_parent_in_the_relay_and_an_orphan_climbs_up(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    """relay_fanout = 1: the second follower copies from the first, not from the leader; when
    the first stops serving, the second finishes from the leader (still no origin fetch)."""
    leader, first, second = nodes
    size = 4 * MiB
    digests = join(nodes, origin, redis_server.url, {"chain.bin": size}, extra="relay_fanout = 1\n")
    faults = origin.fault("files/chain.bin", total_rate=MiB // 8)  # slow while they start
    pulls = [leader.cli.popen("pull", "--split", "1", "chain.bin")]
    for node in nodes:  # they come one after the other: the line is leader, first, second
        if node is not leader:
            pulls.append(node.cli.popen("pull", "chain.bin"))
        wait_for(partial(_is_fetching, redis_server, "chain.bin", node.host), what=node.host)
    line = redis_server.client().lrange(f"cmcache:relay:{REF.format('chain.bin')}", 0, -1)
    assert line == [leader.host, first.host, second.host]
    first.stop(signal.SIGKILL)  # its `serve`: its pull goes on copying from the leader
    faults.total_rate = MiB
    for pull, node in zip(pulls, nodes, strict=True):
        _out, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err
        assert file_sha(node.cli.root / "checkpoints" / "chain.bin") == digests["chain.bin"]
        if node is second:  # it was copying from the first follower
            assert "the peer stopped serving it" in err
    assert origin_bytes(origin, "chain.bin") <= size * 1.05  # the leader's fetch, once


def test_relay_fanout_is_validated(cli: Cli) -> None:
    assert cli("config", "set", "cluster.relay_fanout", "1").code == 0
    for bad in ("0", "17", "two"):
        result = cli("config", "set", "cluster.relay_fanout", bad)
        assert result.code == 3, result.stderr
        assert "cluster.relay_fanout" in result.stderr
    assert "relay_fanout = 1" in cli.config.read_text()


def test_swarm_can_be_turned_off_and_takes_only_a_boolean(cli: Cli) -> None:
    assert cli("config", "set", "cluster.swarm", "false").code == 0
    assert "swarm = false" in cli.config.read_text()
    result = cli("config", "set", "cluster.swarm", "sometimes")
    assert result.code == 3 and "cluster.swarm" in result.stderr
