"""The cluster when something is wrong: peers with bad bytes or no answers, junk in Redis,
Redis restarting, a detached origin fetch, two nodes with one name."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
import requests
from clustering import (
    SECRET,
    MiB,
    Node,
    RedisServer,
    fake_holder,
    join,
    origin_bytes,
    rot,
)
from conftest import Cli
from origin import Origin
from pulling import FAST_RETRIES, file_sha, wait_for

REF = "checkpoints/{}"


def test_a_peer_serving_rotten_bytes_is_dropped_and_the_origin_finishes(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    first, second = nodes[0], nodes[1]
    digests = join(nodes[:2], origin, redis_server.url, {"rot.bin": 4 * MiB})
    assert first.cli("pull", "rot.bin").code == 0
    rot(first.cli.root / "checkpoints" / "rot.bin")  # size, inode and mtime unchanged
    result = second.cli("pull", "rot.bin")
    assert result.code == 0, result.stderr
    assert "bad bytes from 127.0.0.2" in result.stderr
    assert file_sha(second.cli.root / "checkpoints" / "rot.bin") == digests["rot.bin"]
    holders = redis_server.client().hgetall("cmcache:holders:checkpoints/rot.bin")
    assert "127.0.0.2" not in holders and "127.0.0.3" in holders
    # The complaint reaches the holder: it hashes the file again and stops serving it.
    url = peer_url(first.url, SECRET, "checkpoints", "rot.bin")
    wait_for(lambda: requests.get(url, timeout=5).status_code == 404, what="serve to drop it")
    assert "127.0.0.2" not in redis_server.client().hgetall("cmcache:holders:checkpoints/rot.bin")
    assert "no longer served" in first.stop()


def test_verify_withdraws_a_bad_file_and_serve_stops_serving_it(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    digests = join(nodes[:1], origin, redis_server.url, {"v.bin": 2 * MiB})
    assert node.cli("pull", "v.bin").code == 0
    url = peer_url(node.url, SECRET, "checkpoints", "v.bin")
    assert requests.get(url, timeout=5).status_code == 200
    rot(node.cli.root / "checkpoints" / "v.bin")
    checked = node.cli("verify")
    assert checked.code == 7 and "bad checkpoints/v.bin" in checked.stdout
    assert redis_server.client().hgetall("cmcache:holders:checkpoints/v.bin") == {}
    assert requests.get(url, timeout=5).status_code == 404
    # The next pull fetches it again instead of counting the bad file as present.
    assert node.cli("pull", "v.bin").code == 0
    assert file_sha(node.cli.root / "checkpoints" / "v.bin") == digests["v.bin"]
    wait_for(lambda: requests.get(url, timeout=5).status_code == 200, what="served again")


def test_a_silent_peer_costs_seconds_then_the_origin_serves(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    node = nodes[0]
    digests = join(nodes[:1], origin, redis_server.url, {"q.bin": 2 * MiB}, serve=False)
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.5", 0))
        silent.listen(64)
        url = f"http://127.0.0.5:{silent.getsockname()[1]}"
        fake_holder(
            redis_server.client(), "ghost", url, REF.format("q.bin"), digests["q.bin"], 2 * MiB
        )
        started = time.monotonic()
        result = node.cli("pull", "q.bin")
        took = time.monotonic() - started
    assert result.code == 0, result.stderr
    assert "finishing from the origin" in result.stderr
    assert took < 30, took  # download.timeout is 10 here: one peer timeout, not five retries
    assert file_sha(node.cli.root / "checkpoints" / "q.bin") == digests["q.bin"]


def test_a_peer_hash_counts_only_when_the_manifest_or_origin_says_it(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    first, second, third = nodes
    # The first node's list names other bytes for the same model (no hash anywhere).
    join(nodes[:1], origin, redis_server.url, {"evil.bin": MiB}, sha=False, serve=False)
    good = join(nodes[1:], origin, redis_server.url, {"m.bin": MiB}, sha=False)["m.bin"]
    listing = first.cli.home / "list.json"
    listing.write_text(listing.read_text().replace("evil.bin", "m.bin", 1))
    assert first.cli("sync").code == 0 and first.cli("pull", "m.bin").code == 0
    assert file_sha(first.cli.root / "checkpoints" / "m.bin") != good  # holds its own bytes
    first.start()
    result = second.cli("pull", "m.bin")
    assert result.code == 0, result.stderr
    assert file_sha(second.cli.root / "checkpoints" / "m.bin") == good
    assert second.cli("verify").code == 0
    # Once the origin announces the hash, the peer with those bytes serves it.
    origin.fault("files/m.bin", headers={"X-Linked-Etag": f'"{good}"'})
    before = origin_bytes(origin, "m.bin")
    assert third.cli("pull", "m.bin").code == 0
    assert origin_bytes(origin, "m.bin") - before <= 1  # only the probe for its hash
    assert file_sha(third.cli.root / "checkpoints" / "m.bin") == good


def test_malformed_redis_records_are_skipped_with_one_warning(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    node = nodes[0]
    digests = join(nodes[:1], origin, redis_server.url, {"j.bin": MiB}, serve=False)
    r = redis_server.client()
    sha, ref = digests["j.bin"], REF.format("j.bin")
    junk = {
        "notjson": "{nope",
        "nourl": json.dumps({"models": 1}),
        "fileurl": json.dumps({"url": "file:///etc/passwd"}),
        "control": json.dumps({"url": "http://127.0.0.1:1/\x07"}),
    }
    for name, body in junk.items():
        r.set(f"cmcache:node:{name}", body, ex=60)
        r.hset(f"cmcache:holders:{ref}", name, json.dumps({"sha256": sha, "size": MiB}))
    fake_holder(r, "badsize", f"http://127.0.0.6:{origin.port}", ref, sha, MiB)
    r.hset(f"cmcache:holders:{ref}", "badsize", json.dumps({"sha256": sha, "size": "abc"}))
    fake_holder(r, "badjson", f"http://127.0.0.6:{origin.port}", ref, sha, MiB)
    r.hset(f"cmcache:holders:{ref}", "badjson", "][")
    result = node.cli("pull", "j.bin")
    assert result.code == 0, result.stderr
    assert file_sha(node.cli.root / "checkpoints" / "j.bin") == digests["j.bin"]
    for name in [*junk, "badsize", "badjson"]:
        assert result.stderr.count(name) == 1, (name, result.stderr)
    status = node.cli("--json", "cluster", "status")
    assert status.code == 0 and set(status.json()["data"]["nodes"]) == {"badsize", "badjson"}
    assert status.stderr.count("skipping the malformed Redis record") == 4, status.stderr


def test_peer_urls_are_plain_bases_never_other_paths(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    node = nodes[0]
    digests = join(nodes[:1], origin, redis_server.url, {"s.bin": MiB}, serve=False)
    private = origin.url("private/admin?x=")
    fake_holder(redis_server.client(), "ssrf", private, REF.format("s.bin"), digests["s.bin"], MiB)
    result = node.cli("pull", "s.bin")
    assert result.code == 0, result.stderr
    assert "only a base is allowed" in result.stderr
    assert not [r for r in origin.log if "private" in r.path]


def test_serve_wants_an_unexpired_signature(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    join(nodes[:1], origin, redis_server.url, {"e.bin": MiB})
    assert node.cli("pull", "e.bin").code == 0
    fresh = peer_url(node.url, SECRET, "checkpoints", "e.bin")
    assert requests.get(fresh, timeout=5).status_code == 200
    stale = peer_url(node.url, SECRET, "checkpoints", "e.bin", ttl=-1)
    assert requests.get(stale, timeout=5).status_code == 401
    bare = f"{node.url}/v1/models/checkpoints/e.bin?sig={fresh.rsplit('sig=', 1)[1]}"
    assert requests.get(bare, timeout=5).status_code == 401  # no expiry: refused
    odd = fresh.rsplit("sig=", 1)[0] + "sig=%C3%A9"
    assert requests.get(odd, timeout=5).status_code == 401  # not a 500
    with requests.get(fresh, stream=True, timeout=5) as early:  # a peer hanging up early
        next(early.iter_content(1024))
    assert requests.get(fresh, timeout=5).status_code == 200
    assert "Traceback" not in node.stop()


def test_announcements_come_back_after_redis_restarts(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    node = nodes[0]
    join(nodes[:1], origin, redis_server.url, {"r.bin": MiB})
    assert node.cli("pull", "r.bin").code == 0
    redis_server.stop()
    redis_server.start()  # empty: no persistence
    key = "cmcache:holders:checkpoints/r.bin"
    wait_for(lambda: "127.0.0.2" in redis_server.client().hgetall(key), timeout=15, what="announce")
    assert redis_server.client().exists("cmcache:node:127.0.0.2")


def test_a_detached_origin_fetch_keeps_its_turn(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    first, second = nodes[0], nodes[1]
    size = 12 * MiB
    digests = join(nodes[:2], origin, redis_server.url, {"d.bin": size}, rate=4 * MiB)
    assert first.cli("pull", "--detach", "d.bin").code == 0
    waiting = second.cli.popen("pull", "d.bin")
    placed = first.cli.root / "checkpoints" / "d.bin"
    wait_for(lambda: first.cli("status").code == 0 and placed.exists(), timeout=60, what="placed")
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "another node is fetching it" in err
    assert file_sha(second.cli.root / "checkpoints" / "d.bin") == digests["d.bin"]
    assert origin_bytes(origin, "d.bin") <= size * 1.1  # one copy, not two
    assert not redis_server.client().exists("cmcache:fetch:checkpoints/d.bin")


def test_two_nodes_with_one_name_are_refused(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    first, second = nodes[0], nodes[1]
    join(nodes[:2], origin, redis_server.url, {"n.bin": MiB}, serve=False)
    for node in (first, second):
        text = node.cli.config.read_text().replace(f'node = "{node.host}"', 'node = "same"')
        node.cli.write_config(text)
    first.server = first.cli.popen("serve")
    wait_for(lambda: redis_server.client().exists("cmcache:node:same"), what="first serve")
    refused = second.cli("serve", timeout=30)
    assert refused.code == 3, refused.stderr
    assert "same" in refused.stderr and first.url in refused.stderr


def test_a_fetch_lock_without_expiry_is_not_waited_on_forever(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    node = nodes[0]
    join(nodes[:1], origin, redis_server.url, {"t.bin": MiB}, serve=False)
    redis_server.client().set("cmcache:fetch:checkpoints/t.bin", "someone/1")  # no TTL
    started = time.monotonic()
    result = node.cli("pull", "t.bin")
    assert result.code == 0, result.stderr
    assert "has no expiry" in result.stderr
    assert time.monotonic() - started < 60  # the grace is 2 s; the rest is a loaded machine


def test_a_reader_that_stops_reading_is_cut_off_and_the_file_can_be_pruned(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    join(nodes[:1], origin, redis_server.url, {"k.bin": 16 * MiB}, serve=False)
    node.cli.write_config(node.cli.config.read_text().replace("timeout = 10", "timeout = 2"))
    node.start()
    assert node.cli("pull", "k.bin").code == 0
    path = node.cli.root / "checkpoints" / "k.bin"
    with requests.get(
        peer_url(node.url, SECRET, "checkpoints", "k.bin"), stream=True, timeout=30
    ) as stalled:
        next(stalled.iter_content(64 * 1024))  # begun; then this reader takes nothing more
        wait_for(
            lambda: node.cli("prune", "--keep-days", "0").code == 0 and not path.exists(),
            timeout=30,
            what="the stalled transfer to be cut off and the file pruned",
        )


@pytest.mark.parametrize(
    ("cluster", "code", "says"),
    [
        ('origin_rate = "0/minute"', 3, "never allows a download"),
        ('cluster_origin_rate = "10/0minute"', 3, "never allows a download"),
        ('redis = "127.0.0.1:6379/0"', 3, "CMCACHE_REDIS"),
        ('redis = "redis://127.0.0.1:abc/0"', 3, "CMCACHE_REDIS"),
    ],
)
def test_cluster_values_that_cannot_work_are_config_errors(
    cli: Cli, cluster: str, code: int, says: str
) -> None:
    cli.write_config(f"[cluster]\n{cluster}\n")
    result = cli("cluster", "status")
    assert result.code == code, result.stderr
    assert says in result.stderr and "unexpected" not in result.stderr


def test_serve_names_a_bad_listen_address_and_where_it_came_from(
    cli: Cli, redis_server: RedisServer
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    cli.env["CMCACHE_CLUSTER_SECRET"] = SECRET
    cli.write_config(f'[cluster]\nredis = "{redis_server.url}"\nnode = "a"\n')
    with busy:
        for listen, code, says in (
            ("127.0.0.1:70000", 2, "--listen"),
            ("no-such-host.invalid:8765", 2, "cannot listen on no-such-host.invalid:8765"),
            (f"127.0.0.1:{port}", 2, f"cannot listen on 127.0.0.1:{port} (--listen)"),
        ):
            result = cli("serve", "--listen", listen, timeout=60)
            assert result.code == code, (listen, result.stderr)
            assert says in result.stderr and "unexpected" not in result.stderr
        cli.write_config(
            f'[cluster]\nredis = "{redis_server.url}"\nnode = "a"\nserve = "127.0.0.1:{port}"\n'
        )
        in_use = cli("serve", timeout=60)
    assert in_use.code == 3 and "[cluster] serve" in in_use.stderr, in_use.stderr
    cli.write_config(f'[cluster]\nredis = "{redis_server.url}"\nserve = "0.0.0.0:{port}"\n')
    anywhere = cli("serve", timeout=60)
    assert anywhere.code == 3 and "advertise" in anywhere.stderr, anywhere.stderr


def _twins(node: Node, origin: Origin, redis_url: str) -> tuple[str, Path]:
    """One model listed under two names on one node, both pulled; (its sha256, their folder)."""
    digest = origin.add_random("files/s.bin", MiB)
    models = [
        {
            "folder": "checkpoints",
            "filename": name,
            "url": origin.url("files/s.bin"),
            "sha256": digest,
            "size": MiB,
        }
        for name in ("s.bin", "s-copy.bin")
    ]
    listing = node.cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    node.cli.write_config(
        f'{FAST_RETRIES}\n[[sources]]\nname = "test"\nurl = "{listing}"\n'
        f'[cluster]\nredis = "{redis_url}"\nnode = "{node.host}"\n'
        f'serve = "{node.host}:{node.port}"\n'
    )
    assert node.cli("sync").code == 0
    assert node.cli("pull", "s.bin", "s-copy.bin").code == 0
    return digest, node.cli.root / "checkpoints"


def test_serve_sends_a_name_an_interrupted_dedupe_linked(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    digest, folder = _twins(node, origin, redis_server.url)
    node.start()
    # Killed after a link replaced one name, before the index learnt its new inode.
    node.cli.env["CMCACHE_CRASH_AT"] = "dedupe-replaced"
    assert node.cli("dedupe").code == -9
    del node.cli.env["CMCACHE_CRASH_AT"]
    assert (folder / "s.bin").stat().st_ino == (folder / "s-copy.bin").stat().st_ino
    for name in ("s.bin", "s-copy.bin"):
        response = requests.get(peer_url(node.url, SECRET, "checkpoints", name), timeout=10)
        assert response.status_code == 200, name
        assert hashlib.sha256(response.content).hexdigest() == digest


def test_a_complaint_about_linked_bytes_withdraws_every_name(
    nodes: list[Node], origin: Origin, redis_server: RedisServer
) -> None:
    from cmcache.adapters.cluster.server import peer_url

    node = nodes[0]
    _digest, folder = _twins(node, origin, redis_server.url)
    assert node.cli("dedupe").code == 0
    node.start()
    urls = [peer_url(node.url, SECRET, "checkpoints", n) for n in ("s.bin", "s-copy.bin")]
    assert [requests.get(u, timeout=5).status_code for u in urls] == [200, 200]
    rot(folder / "s.bin")  # the bytes of both names
    redis_server.client().sadd(f"cmcache:suspect:{node.host}", REF.format("s-copy.bin"))
    wait_for(
        lambda: [requests.get(u, timeout=5).status_code for u in urls] == [404, 404],
        what="serve to drop both names",
    )
    holders = redis_server.client()
    assert holders.hgetall("cmcache:holders:checkpoints/s.bin") == {}
