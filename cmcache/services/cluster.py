"""Several machines sharing one cache through Redis: who holds what, peers serving each other,
one origin fetch per model, origin rate limits. Without ``[cluster] redis`` nothing changes;
with Redis unreachable, pulls warn once and use the origins."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.core.errors import ClusterUnavailable

WAIT_POLL = 0.5  # seconds between looks for the model while another node fetches it

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cmcache.adapters.cluster.registry import FetchLock, Holder, Registry
    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target
    from cmcache.services.in_flight import Live


def registry_for(settings: Settings) -> Registry:
    """The cluster registry.

    Raises:
        ClusterUnavailable: no ``[cluster] redis``, or Redis does not answer.
    """
    from cmcache.adapters.cluster.registry import Registry

    cluster = settings.cluster
    if not cluster.enabled:
        raise ClusterUnavailable(
            "this node is not in a cluster", hint="set [cluster] redis (or CMCACHE_REDIS)"
        )
    registry = Registry(cluster.redis, cluster.node_name)
    registry.ping()
    return registry


@dataclass
class Cluster:
    """What a pull needs of the cluster; every Redis failure degrades to "no cluster"."""

    settings: Settings
    registry: Registry
    on_note: Callable[[str], None]
    _down: bool = field(default=False, init=False)

    def _safe(self, fn: Callable[[], object]) -> object:
        if self._down:
            return None
        try:
            return fn()
        except ClusterUnavailable as exc:
            self._down = True
            self.on_note(f"cluster: {exc.message}; using the origins")
            return None

    @property
    def secret(self) -> str:
        """The shared secret (for signing peer URLs; never sent)."""
        return self.settings.cluster.secret_value()

    def peers(self, target: Target) -> tuple[list[str], Holder | None]:
        """Signed URLs of the live peers holding ``target`` with the expected bytes."""
        from cmcache.adapters.cluster.server import peer_url

        held = self._safe(lambda: self.registry.holders(target.ref))
        holders: list[Holder] = held if isinstance(held, list) else []
        want = target.entry.sha256
        matching = [h for h in holders if want is None or h.sha256 == want]
        if want is None and len({h.sha256 for h in matching}) > 1:
            return [], None  # peers disagree and no manifest hash decides: use the origin
        entry = target.entry
        urls = [peer_url(h.url, self.secret, entry.folder, entry.filename) for h in matching]
        return urls, (matching[0] if matching else None)

    def fetch_lock(self, target: Target) -> FetchLock | None:
        """This node's turn to fetch ``target`` from its origin, or None if another node's."""
        lock = self.registry.fetch_lock(target.ref)
        taken = self._safe(lock.acquire)
        return lock if taken or (taken is None and self._down) else None

    def origin_wait(self) -> float:
        """Seconds to wait before the next origin fetch (origin_rate, cluster_origin_rate)."""
        c = self.settings.cluster
        wait = self._safe(
            lambda: self.registry.take_origin_slot(c.origin_rate, c.cluster_origin_rate)
        )
        return wait if isinstance(wait, float) else 0.0

    def source_for(self, live: Live, on_note: Callable[[str], None]) -> list[str] | None:
        """Peers' URLs when live peers hold the model; None to fetch from the origin (this
        node's turn, within the rate limits); [] to wait and ask again."""
        from cmcache.adapters.http.resolve import Resolved

        ref, now = live.target.ref, time.monotonic()
        if not live.peer_failed:
            urls, holder = self.peers(live.target)
            if urls and holder is not None:
                live.via = "peer"
                live.resolved = Resolved(urls[0], None, holder.size, holder.sha256, True)
                return urls
        live.via, live.resolved = "origin", None
        if live.fetch_lock is None:
            live.fetch_lock = self.fetch_lock(live.target)
            if live.fetch_lock is None:
                if not live.noted_wait:
                    on_note(f"{ref}: another node is fetching it from its origin; waiting")
                    live.noted_wait = True
                live.retry_at = now + WAIT_POLL
                return []
        wait = self.origin_wait()
        if wait > 0:
            on_note(f"{ref}: the origin rate limit is reached; waiting {wait:.0f}s")
            live.retry_at = now + wait
            return []
        return None

    def keep_locks(self, lives: Iterable[Live]) -> None:
        """Extend this node's origin-fetch locks (every 10 s) while their downloads live."""
        now = time.monotonic()
        for live in lives:
            if live.fetch_lock is not None and now - live.extended_at > 10:
                live.extended_at = now
                self._safe(live.fetch_lock.extend)

    def announce(self, ref: str, sha256: str, size: int) -> None:
        """This node now holds ``ref``."""
        self._safe(lambda: self.registry.announce(ref, sha256, size))

    def withdraw(self, ref: str) -> None:
        """This node no longer holds ``ref``."""
        self._safe(lambda: self.registry.withdraw(ref))


def cluster_for(settings: Settings, on_note: Callable[[str], None]) -> Cluster | None:
    """The cluster for a pull, or None (not configured, or Redis down: said once)."""
    if not settings.cluster.enabled:
        return None
    try:
        return Cluster(settings, registry_for(settings), on_note)
    except ClusterUnavailable as exc:
        on_note(f"cluster: {exc.message}; using the origins")
        return None


@dataclass(frozen=True)
class ClusterStatus:
    """Nodes alive, what each holds, what is being fetched where, rate budget left."""

    nodes: dict[str, dict[str, object]]
    holders: dict[str, list[str]]
    fetching: dict[str, str]
    budget: dict[str, int]


def cluster_status(settings: Settings) -> ClusterStatus:
    """The cluster as Redis sees it.

    Raises:
        ClusterUnavailable: not configured, or Redis unreachable (exit 5).
    """
    registry = registry_for(settings)
    nodes = {
        n.name: {"url": n.url, "models": n.models, "bytes": n.bytes, "seen": n.seen}
        for n in registry.nodes().values()
    }
    c = settings.cluster
    return ClusterStatus(
        nodes,
        registry.held_by(),
        registry.fetching(),
        registry.budget(c.origin_rate, c.cluster_origin_rate),
    )


def withdraw_quietly(settings: Settings, refs: list[str]) -> None:
    """Withdraw announcements of removed files; a cluster that is down learns it later."""
    if not settings.cluster.enabled or not refs:
        return
    with contextlib.suppress(ClusterUnavailable):
        registry = registry_for(settings)
        for ref in refs:
            registry.withdraw(ref)
