"""The cluster's shared state in Redis (redis-py): live nodes, who holds which model, one
origin fetch per model at a time, and origin rate limits (the `limits` library).

Keys, all under ``cmcache:``: ``node:<name>`` (a heartbeat with a TTL), ``holders:<ref>`` (a
hash node → sha256 and size), ``fetch:<ref>`` (a redis-py Lock whose token names the node).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions

from cmcache.core.errors import ClusterUnavailable
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable

PREFIX = "cmcache:"
HEARTBEAT_TTL = 15  # seconds a node counts as alive after its last heartbeat
LOCK_TTL = 30.0  # seconds a fetch lock outlives a holder that stopped extending it


@dataclass(frozen=True)
class Holder:
    """A live node that holds a model, and where to fetch it."""

    node: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class NodeInfo:
    """A live node as its last heartbeat described it."""

    name: str
    url: str
    models: int
    bytes: int
    seen: float


class Registry:
    """This node's view of the cluster."""

    def __init__(self, url: str, node: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.node = node
        self.redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )

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

    # ------------------------------------------------------------ nodes

    def heartbeat(self, url: str, models: int, size: int) -> None:
        """Say this node is alive and serves at ``url``."""
        body = json.dumps({"url": url, "models": models, "bytes": size, "seen": time.time()})
        self.call(lambda: self.redis.set(f"{PREFIX}node:{self.node}", body, ex=HEARTBEAT_TTL))

    def leave(self) -> None:
        """Stop counting as alive now (a clean shutdown)."""
        self.call(lambda: self.redis.delete(f"{PREFIX}node:{self.node}"))

    def nodes(self) -> dict[str, NodeInfo]:
        """Every live node."""
        keys = self.call(lambda: list(self.redis.scan_iter(f"{PREFIX}node:*")))
        values = self.call(lambda: self.redis.mget(keys)) if keys else []
        out = {}
        for key, value in zip(keys, values, strict=True):
            if value:
                doc = json.loads(value)
                name = key.removeprefix(f"{PREFIX}node:")
                out[name] = NodeInfo(name, doc["url"], doc["models"], doc["bytes"], doc["seen"])
        return out

    # ------------------------------------------------------------ the location index

    def announce(self, ref: str, sha256: str, size: int) -> None:
        """This node holds ``ref`` (verified bytes with this sha256)."""
        body = json.dumps({"sha256": sha256, "size": size})
        self.call(lambda: self.redis.hset(f"{PREFIX}holders:{ref}", self.node, body))

    def withdraw(self, ref: str) -> None:
        """This node no longer holds ``ref``."""
        self.call(lambda: self.redis.hdel(f"{PREFIX}holders:{ref}", self.node))

    def holders(self, ref: str) -> list[Holder]:
        """Live nodes other than this one that hold ``ref``."""
        held = self.call(lambda: self.redis.hgetall(f"{PREFIX}holders:{ref}"))
        if not held:
            return []
        live = self.nodes()
        out = []
        for node, body in held.items():
            if node != self.node and node in live:
                doc = json.loads(body)
                out.append(Holder(node, live[node].url, doc["sha256"], int(doc["size"])))
        return out

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

    def fetch_lock(self, ref: str) -> FetchLock:
        """The lock that lets one node at a time fetch ``ref`` from its origin."""
        return FetchLock(self, ref)

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


class FetchLock:
    """A redis-py Lock with a timeout, extended while its holder is alive; a dead holder's
    lock expires and the next node takes over."""

    def __init__(self, registry: Registry, ref: str) -> None:
        self.registry = registry
        self.token = f"{registry.node}/{uuid.uuid4().hex}"
        self._lock = registry.redis.lock(f"{PREFIX}fetch:{ref}", timeout=LOCK_TTL, blocking=False)
        self.held = False

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        self.held = bool(self.registry.call(lambda: self._lock.acquire(token=self.token)))
        return self.held

    def extend(self) -> None:
        """Push the expiry back to a full LOCK_TTL (call while the fetch makes progress)."""
        if self.held:
            self.registry.call(lambda: self._lock.extend(LOCK_TTL, replace_ttl=True))

    def release(self) -> None:
        """Give the lock back (an expired one is gone already)."""
        if self.held:
            self.held = False
            with contextlib.suppress(ClusterUnavailable, redis.exceptions.LockError):
                self.registry.call(self._lock.release)
