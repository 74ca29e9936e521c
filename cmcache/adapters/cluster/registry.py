"""The cluster's shared state in Redis (redis-py): live nodes, who holds which model, one
origin fetch per model at a time, and origin rate limits (the `limits` library).

Keys, all under ``cmcache:``: ``node:<name>`` (a heartbeat with a TTL), ``holders:<ref>`` (a
hash node → sha256 and size), ``fetch:<ref>`` (a lock whose value names the node),
``suspect:<node>`` (refs whose bytes from that node failed a peer's check), ``fetching:<ref>``
(a hash node → sha256, size and an expiry: nodes downloading it now, whose `serve` hands out
the pieces they have), ``relay:<ref>`` (a list of nodes in the order they came to copy it
while it is fetched, the origin fetcher first: the relay tree is laid over it).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.exceptions

from cmcache.core.errors import ClusterUnavailable
from cmcache.core.peers import BadRecord, parse_fetching, parse_holding, parse_node
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable

Record = TypeVar("Record")
PREFIX = "cmcache:"
HEARTBEAT_TTL = 15  # seconds a node counts as alive after its last heartbeat
LOCK_TTL = 30.0  # seconds a fetch lock outlives a holder that stopped extending it
DETACHED_LOCK_TTL = 600.0  # the same for a detached download, which nobody watches for a while
BROKEN_LOCK_GRACE = 2.0  # a fetch lock without any expiry (not ours) is given this much more
FETCHING_TTL = 30.0  # seconds a "fetching" record outlives a node that stopped renewing it
RELAY_TTL = 3600  # seconds a line of nodes copying a model outlives its last newcomer
RELAY_MAX = 100_000  # places of a line read at most
SUSPECT_TTL = 86400  # seconds a complaint about a holder's bytes waits for that holder
# Seconds one look at the live nodes serves ``holders``: the look scans every key, and a bundle
# asks for each member (2,000 lookups with 2,000 keys: 69 s, 0.5 s with the look reused); a
# node's heartbeat comes every 5 s anyway.
NODES_REUSE = 1.0


@dataclass(frozen=True)
class Holder:
    """A live node that holds a model, and where to fetch it."""

    node: str
    url: str  # a checked ``scheme://host:port`` base
    sha256: str  # as the holder announced it: a claim, never a proof
    size: int
    partial: bool = False  # still downloading it: serves the pieces it has finished


@dataclass(frozen=True)
class NodeInfo:
    """A live node as its last heartbeat described it."""

    name: str
    url: str
    models: int
    bytes: int
    seen: float
    instance: str = ""


class Registry:
    """This node's view of the cluster. Every value read from Redis is checked
    (core.peers); a malformed one is skipped and reported once through ``on_bad``."""

    def __init__(
        self,
        url: str,
        node: str,
        *,
        timeout: float = 2.0,
        on_bad: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.node = node
        self.redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            encoding_errors="replace",  # bytes that are not UTF-8: a malformed record, skipped
        )
        self._on_bad = on_bad or (lambda _text: None)
        self._reported: set[str] = set()
        self._nodes_seen: tuple[float, dict[str, NodeInfo]] | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise ClusterUnavailable(
                f"Redis at {redact(self.url)} is unreachable: {exc}",
                hint="check [cluster] redis (or CMCACHE_REDIS)",
            ) from None
        except redis.exceptions.RedisError as exc:
            raise ClusterUnavailable(f"Redis at {redact(self.url)}: {exc}") from None

    def ping(self) -> None:
        """Raise ClusterUnavailable unless Redis answers."""
        self.call(self.redis.ping)

    def report_once(self, key: str, text: str) -> None:
        """Say ``text`` through ``on_bad`` once per key and registry."""
        if key not in self._reported:
            self._reported.add(key)
            self._on_bad(text)

    def _skip(self, key: str, reason: str) -> None:
        self.report_once(key, f"cluster: skipping the malformed Redis record {key}: {reason}")

    # ------------------------------------------------------------ nodes

    def heartbeat(self, url: str, models: int, size: int, instance: str) -> NodeInfo | None:
        """Say this node is alive and serves at ``url``; returns the heartbeat this one
        replaced (None: the key had lapsed or Redis lost it, so announcements may be gone)."""
        body = json.dumps(
            {"url": url, "models": models, "bytes": size, "seen": time.time(), "instance": instance}
        )
        key = f"{PREFIX}node:{self.node}"
        before = self.call(lambda: self.redis.set(key, body, ex=HEARTBEAT_TTL, get=True))
        return self._node(self.node, before) if before else None

    def node_info(self, name: str) -> NodeInfo | None:
        """One live node's last heartbeat, if it is alive and well-formed."""
        raw = self.call(lambda: self.redis.get(f"{PREFIX}node:{name}"))
        return self._node(name, raw) if raw else None

    def leave(self, instance: str) -> None:
        """Stop counting as alive now (a clean shutdown), unless another instance has taken
        over this name meanwhile."""
        key = f"{PREFIX}node:{self.node}"
        mine = self.node_info(self.node)
        if mine is not None and mine.instance == instance:
            self.call(lambda: self.redis.delete(key))

    def nodes(self) -> dict[str, NodeInfo]:
        """Every live node with a well-formed heartbeat."""
        keys = self.call(lambda: list(self.redis.scan_iter(f"{PREFIX}node:*")))
        values = self.call(lambda: self.redis.mget(keys)) if keys else []
        out = {}
        for key, value in zip(keys, values, strict=True):
            name = key.removeprefix(f"{PREFIX}node:")
            node = self._node(name, value) if value else None
            if node is not None:
                out[name] = node
        return out

    def _recent_nodes(self) -> dict[str, NodeInfo]:
        """``nodes()``, looked at again only after ``NODES_REUSE`` seconds."""
        now = time.monotonic()
        if self._nodes_seen is None or now - self._nodes_seen[0] > NODES_REUSE:
            self._nodes_seen = (now, self.nodes())
        return self._nodes_seen[1]

    def _node(self, name: str, raw: str) -> NodeInfo | None:
        try:
            doc = parse_node(raw)
        except BadRecord as exc:
            self._skip(f"{PREFIX}node:{name}", str(exc))
            return None
        return NodeInfo(name, doc.url, doc.models, doc.bytes, doc.seen, doc.instance)

    # ------------------------------------------------------------ the location index

    def announce(self, ref: str, sha256: str, size: int) -> None:
        """This node holds ``ref`` (verified bytes with this sha256)."""
        body = json.dumps({"sha256": sha256, "size": size})
        self.call(lambda: self.redis.hset(f"{PREFIX}holders:{ref}", self.node, body))

    def withdraw(self, ref: str) -> None:
        """This node no longer holds ``ref``."""
        self.call(lambda: self.redis.hdel(f"{PREFIX}holders:{ref}", self.node))

    def holders(self, ref: str) -> list[Holder]:
        """Live nodes other than this one that hold ``ref`` (well-formed records only)."""
        records = self._live_records(f"{PREFIX}holders:{ref}", parse_holding)
        return [Holder(node, url, r.sha256, r.size) for node, url, r in records]

    def start_fetching(self, ref: str, sha256: str, size: int) -> None:
        """This node downloads ``ref`` now and serves its finished pieces; the record lapses
        ``FETCHING_TTL`` seconds after the last call unless renewed by calling again."""
        key = f"{PREFIX}fetching:{ref}"
        body = json.dumps({"sha256": sha256, "size": size, "until": time.time() + FETCHING_TTL})

        def run() -> None:
            with self.redis.pipeline() as pipe:
                pipe.hset(key, self.node, body)
                pipe.expire(key, int(FETCHING_TTL) + 1)
                pipe.execute()

        self.call(run)

    def stop_fetching(self, ref: str) -> None:
        """This node no longer downloads ``ref`` (placed, failed or dropped)."""
        self.call(lambda: self.redis.hdel(f"{PREFIX}fetching:{ref}", self.node))

    def join_relay(self, ref: str, *, first: bool = False) -> tuple[list[str], int] | None:
        """Put this node in line to copy ``ref`` while it is fetched (``first``: a new line,
        this node fetching from the origin); the line as it stands and this node's place in
        it, or None when the key holds something else (skipped, said once)."""
        key = f"{PREFIX}relay:{ref}"

        def run() -> list[Any]:
            with self.redis.pipeline(transaction=True) as pipe:
                if first:
                    pipe.delete(key)
                pipe.rpush(key, self.node)
                pipe.expire(key, RELAY_TTL)
                pipe.lrange(key, 0, RELAY_MAX)
                return list(pipe.execute())

        try:
            found = self.call(run)
        except ClusterUnavailable as exc:
            if "WRONGTYPE" not in exc.message:
                raise
            self._skip(key, "not a list of nodes")
            return None
        place, line = found[-3], found[-1]
        if not isinstance(place, int) or not isinstance(line, list):
            self._skip(key, "not a list of nodes")
            return None
        return [str(name) for name in line], place - 1

    def fetchers(self, ref: str) -> list[Holder]:
        """Live nodes other than this one downloading ``ref`` now (well-formed records whose
        expiry has not passed), as partial holders."""
        records = self._live_records(f"{PREFIX}fetching:{ref}", parse_fetching)
        now = time.time()
        return [
            Holder(node, url, r.sha256, r.size, partial=True)
            for node, url, r in records
            if r.until >= now
        ]

    def _live_records(
        self, key: str, parse: Callable[[str], Record]
    ) -> list[tuple[str, str, Record]]:
        """(node, its URL, its parsed value) for each live node other than this one in the hash
        at ``key``; a value that does not parse is skipped, saying so once."""
        found = self.call(lambda: self.redis.hgetall(key))
        if not found:
            return []
        live = self._recent_nodes()
        out = []
        for node, body in found.items():
            if node == self.node or node not in live:
                continue
            try:
                out.append((node, live[node].url, parse(body)))
            except BadRecord as exc:
                self._skip(f"{key} (node {node})", str(exc))
        return out

    def distrust(self, ref: str, node: str) -> None:
        """``node`` served bytes of ``ref`` that failed the check: take it off the location
        index, and leave it a complaint, so its `serve` re-verifies the file."""
        suspects = f"{PREFIX}suspect:{node}"

        def run() -> None:
            with self.redis.pipeline() as pipe:
                pipe.hdel(f"{PREFIX}holders:{ref}", node)
                pipe.hdel(f"{PREFIX}fetching:{ref}", node)
                pipe.sadd(suspects, ref)
                pipe.expire(suspects, SUSPECT_TTL)
                pipe.execute()

        self.call(run)

    def complaints(self) -> list[str]:
        """Refs whose bytes from this node failed a peer's check (each taken once)."""
        key = f"{PREFIX}suspect:{self.node}"
        taken = self.call(lambda: self.redis.spop(key, 1000))
        return sorted(str(r) for r in taken or [])

    def held_by(self) -> dict[str, list[str]]:
        """ref → nodes holding it (live or not)."""
        found: dict[str, list[str]] = self.call(self._held_by)
        return found

    def _held_by(self) -> dict[str, list[str]]:
        keys = list(self.redis.scan_iter(f"{PREFIX}holders:*"))
        return {
            k.removeprefix(f"{PREFIX}holders:"): sorted(map(str, self.redis.hkeys(k))) for k in keys
        }

    # ------------------------------------------------------------ one origin fetch at a time

    def fetch_lock(self, ref: str, token: str | None = None) -> FetchLock:
        """The lock that lets one node at a time fetch ``ref`` from its origin; ``token``
        names a lock this node took earlier (a detached download's)."""
        return FetchLock(self, ref, token)

    def fetching(self) -> dict[str, str]:
        """ref → the node fetching it from the origin now."""
        keys = self.call(lambda: list(self.redis.scan_iter(f"{PREFIX}fetch:*")))
        values = self.call(lambda: self.redis.mget(keys)) if keys else []
        return {
            k.removeprefix(f"{PREFIX}fetch:"): v.split("/", 1)[0]
            for k, v in zip(keys, values, strict=True)
            if v
        }

    # ------------------------------------------------------------ origin rate limits

    def take_origin_slot(self, per_node: str, cluster: str) -> float:
        """Count one origin download against the limits; 0.0 when allowed now, else the
        seconds to wait before asking again."""
        wait: float = self.call(lambda: self._take(per_node, cluster))
        return wait

    def budget(self, per_node: str, cluster: str) -> dict[str, int]:
        """Origin downloads left in the current windows, per node and for the cluster."""
        left: dict[str, int] = self.call(lambda: self._left(per_node, cluster))
        return left

    def _limits(self, per_node: str, cluster: str) -> tuple[Any, list[tuple[Any, str]]]:
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        limiter = MovingWindowRateLimiter(storage_from_string(self.url))
        rates = ((per_node, self.node), (cluster, "cluster"))
        return limiter, [(parse(rate), who) for rate, who in rates if rate != "0"]

    def _take(self, per_node: str, cluster: str) -> float:
        limiter, checks = self._limits(per_node, cluster)
        for item, who in checks:
            if not limiter.test(item, "origin", who):
                return max(
                    0.5,
                    float(limiter.get_window_stats(item, "origin", who).reset_time) - time.time(),
                )
        for item, who in checks:
            limiter.hit(item, "origin", who)
        return 0.0

    def _left(self, per_node: str, cluster: str) -> dict[str, int]:
        limiter, checks = self._limits(per_node, cluster)
        return {
            who: int(limiter.get_window_stats(item, "origin", who).remaining)
            for item, who in checks
        }


# Compare-and-act on the lock's value, so only the holder of the token extends or frees it.
_IF_OURS = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call({}) end return 0"
_EXTEND = _IF_OURS.format("'pexpire', KEYS[1], ARGV[2]")
_RELEASE = _IF_OURS.format("'del', KEYS[1]")
# A lock with no expiry can never lapse if its holder dies: give it a short one.
_MEND = (
    "if redis.call('pttl', KEYS[1]) == -1 then "
    "return redis.call('pexpire', KEYS[1], ARGV[1]) end return 0"
)


class FetchLock:
    """A Redis key set with NX and an expiry, extended while its holder is alive; a dead
    holder's lock expires and the next node takes over. The value is ``<node>/<token>``."""

    def __init__(self, registry: Registry, ref: str, token: str | None = None) -> None:
        self.registry = registry
        self.key = f"{PREFIX}fetch:{ref}"
        self.token = token or f"{registry.node}/{uuid.uuid4().hex}"
        self.held = token is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits. A lock left without an expiry
        (never one of ours) is given ``BROKEN_LOCK_GRACE`` seconds to live."""
        r = self.registry.redis
        ttl = _ms(LOCK_TTL)
        taken = self.registry.call(lambda: r.set(self.key, self.token, nx=True, px=ttl))
        grace = _ms(BROKEN_LOCK_GRACE)
        if not taken and self.registry.call(lambda: r.eval(_MEND, 1, self.key, grace)):
            self.registry.report_once(
                self.key,
                f"cluster: the fetch lock {self.key} has no expiry (a holder that died cannot"
                f" free it); it now lapses in {BROKEN_LOCK_GRACE:.0f}s",
            )
        self.held = bool(taken)
        return self.held

    def extend(self, ttl: float = LOCK_TTL) -> bool:
        """Push the expiry back to ``ttl`` seconds; False if the lock is no longer ours."""
        if not self.held:
            return False
        r = self.registry.redis
        ms = _ms(ttl)
        ours = bool(self.registry.call(lambda: r.eval(_EXTEND, 1, self.key, self.token, ms)))
        self.held = ours
        return ours

    def release(self) -> None:
        """Give the lock back (an expired one is gone already)."""
        if self.held:
            self.held = False
            r = self.registry.redis
            with contextlib.suppress(ClusterUnavailable):
                self.registry.call(lambda: r.eval(_RELEASE, 1, self.key, self.token))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
