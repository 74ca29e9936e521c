"""Several machines sharing one cache through Redis: who holds what, peers serving each other,
one origin fetch per model, origin rate limits. Without ``[cluster] redis`` nothing changes;
with Redis unreachable, pulls warn once and use the origins."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.core.errors import ClusterUnavailable, ConfigError
from cmcache.core.files import write_atomic

WAIT_POLL = 0.5  # seconds between looks for the model while another node fetches it
RELAY_POLL = 0.1  # seconds between looks for this node's relay parent to start fetching
RELAY_PATIENCE = 3.0  # seconds a relay parent may take to start before its ancestor serves
SOURCE_LOOK = 1.0  # seconds between looks for more peers while copying from peers
PEER_SPLIT = 4  # peers are near: more connections cost CPU here, not time (111→141 MiB/s)
SWARM_SPLIT = 8  # connections of a copy from nodes still fetching, at most 4 to each
PEER_TIMEOUT = 10  # seconds a peer may send nothing before the origin takes over (at most
# download.timeout): peers are near, and a silent one must cost seconds, not minutes
KEEP_EVERY = 10.0  # seconds between extensions of a fetch lock kept past its download (LOCK_TTL 30)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from cmcache.adapters.cluster.registry import FetchLock, Holder, Registry
    from cmcache.adapters.storage.jobs import Job
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.settings.model import DownloadSettings, Settings
    from cmcache.core.targets import Target
    from cmcache.services.download.in_flight import Live


def registry_for(settings: Settings, on_bad: Callable[[str], None] | None = None) -> Registry:
    """The cluster registry; ``on_bad`` hears (once each) of malformed records it skips.

    Raises:
        ClusterUnavailable: no ``[cluster] redis``, or Redis does not answer.
        ConfigError: the Redis URL does not parse.
    """
    from cmcache.adapters.cluster.registry import Registry

    cluster = settings.cluster
    if not cluster.enabled:
        raise ClusterUnavailable(
            "this node is not in a cluster", hint="set [cluster] redis (or CMCACHE_REDIS)"
        )
    try:
        registry = Registry(cluster.redis, cluster.node_name, on_bad=on_bad)
    except ValueError as exc:  # redis-py's URL parser: a bad port, database or option
        raise ConfigError(f"[cluster] redis (or CMCACHE_REDIS): {exc}") from None
    registry.ping()
    return registry


@dataclass
class Cluster:
    """What a pull needs of the cluster; every Redis failure degrades to "no cluster".

    Choosing sources (``source_for``): a model is taken from peers only when the bytes they
    must deliver are known in advance (the manifest's sha256, else the one its origin
    announces), and only from peers that announce exactly that hash. The whole-file check
    after the last byte is the gate; peers whose bytes fail it are distrusted (taken off the
    location index, their node told to re-verify) and the pull starts over from the origin.
    """

    settings: Settings
    registry: Registry
    on_note: Callable[[str], None]
    _down: bool = field(default=False, init=False)
    _kept: dict[str, FetchLock] = field(default_factory=dict, init=False)  # see ``keep``
    _keeper: threading.Thread | None = field(default=None, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)

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

    def peers(self, target: Target, want_sha: str | None, skip: Iterable[str] = ()) -> list[Holder]:
        """Live peers holding ``target`` with the bytes ``want_sha`` names (none without it),
        leaving out the nodes in ``skip``."""
        if not want_sha:
            return []  # nothing can prove a peer's bytes: the origin serves it
        held = self._safe(lambda: self.registry.holders(target.ref))
        holders: list[Holder] = held if isinstance(held, list) else []
        left_out = set(skip)
        return [h for h in holders if h.sha256 == want_sha and h.node not in left_out]

    def signed_urls(self, target: Target, holders: Iterable[Holder]) -> list[str]:
        """Each holder's URL of ``target``, signed (for ``SIGNATURE_TTL``)."""
        from cmcache.adapters.cluster.server import peer_url

        entry = target.entry
        return [peer_url(h.url, self.secret, entry.folder, entry.filename) for h in holders]

    def member_source(self, live: Live) -> list[str] | None:
        """Peers' URLs for a bundle member (its sha256 is always listed), or None once no
        trusted peer is left: the origin serves only the whole archive, never one member, so
        the caller turns to the archive then (``services/pull/bundles.py``)."""
        if live.peer_failed:
            return None
        skip = live.distrusted | {node for node, _partial in live.gone}  # or it loops on one
        holders = self.peers(live.target, live.target.entry.sha256, skip)
        if not holders:
            return None
        live.via, live.peers, live.began_with = "peer", holders, holders
        live.signed_at = time.monotonic()
        return self.signed_urls(live.target, holders)

    def fetch_lock(self, target: Target) -> FetchLock | None:
        """This node's turn to fetch ``target`` from its origin, or None if another node's."""
        lock = self.registry.fetch_lock(target.ref)
        taken = self._safe(lock.acquire)
        return lock if taken or (taken is None and self._down) else None

    def archive_turn(
        self, live: Live, on_note: Callable[[str], None], *, wait: bool
    ) -> bool | None:
        """Whether this node fetches a bundle's archive from its origin now: True on its turn
        (the archive's fetch lock, or Redis down); False while another node fetches it (ask
        again in ``WAIT_POLL`` s); None once that node let the lock go after this one waited:
        it placed and announced the members (the caller looks for them at peers), or it died
        and its lock lapsed (the caller takes the archive on a new turn then).

        Without ``wait`` (a detached pull, which nobody watches to wait) the turn is taken when
        free, and the archive fetched either way, as before there was a turn.
        """
        if live.fetch_lock is not None:
            return True  # a retry of this node's own fetch
        waited = live.noted_wait
        live.fetch_lock = self.fetch_lock(live.target)
        if live.fetch_lock is not None and waited:
            live.fetch_lock.release()  # the members may be at peers: nobody needs the origin
            live.fetch_lock = None
            return None
        if live.fetch_lock is None and wait:
            if not live.noted_wait:
                ref = live.target.ref
                on_note(f"{ref}: another node is fetching this bundle's archive; waiting")
                live.noted_wait = True
            live.retry_at = time.monotonic() + WAIT_POLL
            return False
        return True

    def keep(self, ref: str, lock: FetchLock) -> None:
        """Hold a bundle archive's fetch lock past its download until ``free(ref)``: its members
        are unpacked and announced only after the whole run, and nodes waiting on the lock must
        not turn to the origin meanwhile. A thread extends it, for that may outlast ``LOCK_TTL``;
        a process that dies stops extending it, and it lapses."""
        with self._guard:
            self._kept[ref] = lock
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep_kept, daemon=True)
                self._keeper.start()

    def _keep_kept(self) -> None:
        """The thread of ``keep``: it ends once no lock is kept. It says nothing (the terminal
        belongs to the main thread); a Redis that is gone lets the locks lapse."""
        try:
            while True:
                time.sleep(KEEP_EVERY)
                with self._guard:
                    locks = list(self._kept.values())
                    if not locks:
                        return
                for lock in locks:
                    with contextlib.suppress(Exception):  # Redis gone: the lock lapses
                        lock.extend()
        finally:
            with self._guard:
                self._keeper = None

    def free(self, ref: str | None = None) -> None:
        """Release the lock ``keep`` holds for ``ref`` (every kept lock without ``ref``)."""
        with self._guard:
            refs = list(self._kept) if ref is None else [ref]
            locks = [self._kept.pop(r) for r in refs if r in self._kept]
        for lock in locks:
            lock.release()

    def origin_wait(self) -> float:
        """Seconds to wait before the next origin fetch (origin_rate, cluster_origin_rate)."""
        c = self.settings.cluster
        wait = self._safe(
            lambda: self.registry.take_origin_slot(c.origin_rate, c.cluster_origin_rate)
        )
        return wait if isinstance(wait, float) else 0.0

    def sources(self, live: Live, want: str | None) -> list[Holder]:
        """Every live peer with the bytes ``want`` names, holders of the placed model first,
        then nodes still downloading it (partial holders, serving the pieces they have);
        leaving out nodes distrusted in this pull and nodes that broke off in the same role
        (one that broke off while fetching is tried again once it holds the model)."""
        if not want:
            return []
        ref = live.target.ref
        swarm = self.settings.cluster.swarm

        def look() -> list[Holder]:
            return self.registry.holders(ref) + (self.registry.fetchers(ref) if swarm else [])

        found = self._safe(look)
        out: list[Holder] = []
        for peer in found if isinstance(found, list) else []:
            skip = peer.node in live.distrusted or (peer.node, peer.partial) in live.gone
            if peer.sha256 == want and not skip and all(p.node != peer.node for p in out):
                out.append(peer)
        return out

    def source_for(
        self, live: Live, on_note: Callable[[str], None], origin_sha: Callable[[], str | None]
    ) -> list[str] | None:
        """Peers' URLs when live peers hold or are fetching the model's expected bytes; None
        to fetch from the origin (this node's turn, within the rate limits); [] to wait and
        ask again.

        A swarm, not a queue: when another node holds the fetch lock, the nodes fetching the
        model are sources at once, not only once one has placed it. With no placed holder this
        node first tries the lock, so nodes that only copy from each other never wait on a
        fetch nobody makes. ``origin_sha`` asks the origin which sha256 it serves (for a
        manifest without one).
        """
        ref, now = live.target.ref, time.monotonic()
        want = None if live.peer_failed else live.target.entry.sha256 or origin_sha()
        found = self.sources(live, want)
        placed = any(not p.partial for p in found)
        if live.fetch_lock is None and not placed:
            live.fetch_lock = self.fetch_lock(live.target)
            if live.fetch_lock is not None:  # the root of a new line of nodes copying from it
                self._safe(lambda: self.registry.join_relay(ref, first=True))
        if found and not placed and live.fetch_lock is None:
            found = self._relay(live, found, now)
            if not found:
                live.retry_at = now + RELAY_POLL
                return []
        if found and (placed or live.fetch_lock is None):
            live.via, live.peers, live.began_with, live.signed_at = "peer", found, found, now
            return self.signed_urls(live.target, found)
        live.via, live.peers = "origin", []
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

    def _relay(self, live: Live, fetching: list[Holder], now: float) -> list[Holder]:
        """The one node still fetching that this node copies from: its parent in the relay
        tree (``core.peers.relay_parent``), each node feeding a few others as the pieces
        arrive, so that no node's upload is shared by every follower. A parent not fetching
        yet is waited for ``RELAY_PATIENCE``, then passed over for its nearest ancestor that
        is. [] to wait; every node fetching when Redis keeps no line."""
        from cmcache.core.peers import relay_parent

        if live.relay is None:
            joined = self._safe(lambda: self.registry.join_relay(live.target.ref))
            live.relay = joined if isinstance(joined, tuple) else ([], 0)
            live.relay_at = now
        line, place = live.relay
        if not 0 < place < len(line):  # no line to go by (Redis down, or a bad key)
            return fetching
        fanout = self.settings.cluster.relay_fanout
        present = {p.node for p in fetching}
        if now - live.relay_at < RELAY_PATIENCE:
            present &= {relay_parent(line, place, fanout, set(line))}
        parent = relay_parent(line, place, fanout, present)
        if parent is None and now - live.relay_at >= RELAY_PATIENCE:
            live.relay = None  # nobody before it is left (a new root started a new line)
        return [p for p in fetching if p.node == parent]

    def more_sources(self, live: Live) -> list[str]:
        """Signed URLs of peers that placed the model since ``live``'s sources were chosen
        (looked up every ``SOURCE_LOOK`` seconds while it copies from peers): the first
        followers to finish take load off the fetching node. Nodes still fetching are taken
        only when a copy starts: added later, they are at the same point of the file as this
        node, and aria2, which cannot tell which pieces a peer has, only waits on them."""
        now = time.monotonic()
        if live.via != "peer" or not self.settings.cluster.swarm:
            return []
        if now - live.looked_at < SOURCE_LOOK:
            return []
        live.looked_at = now
        known = {p.node for p in live.peers if not p.partial}
        new = [p for p in self.sources(live, live.expected_sha) if p.node not in known]
        new = [p for p in new if not p.partial]  # one at the same frontier only holds us up
        live.peers = [p for p in live.peers if p.node not in {n.node for n in new}] + new
        return self.signed_urls(live.target, new)

    def fetching(self, live: Live) -> None:
        """Tell the cluster this node downloads ``live`` now (its `serve` hands out the pieces
        it has), or renew that; only when a reader can check them (sha256 and size known)."""
        sha, size = live.expected_sha, live.expected_size
        if sha and size:
            live.fetching_at = time.monotonic()
            self._safe(lambda: self.registry.start_fetching(live.target.ref, sha, size))

    def done_fetching(self, live: Live) -> None:
        """This node no longer downloads ``live`` (placed, failed or handed to the daemon)."""
        if live.fetching_at:
            live.fetching_at = 0.0
            self._safe(lambda: self.registry.stop_fetching(live.target.ref))

    def reject(self, live: Live, message: str) -> None:
        """The peers ``live`` used sent bytes that failed the check: off the location index
        with them (their nodes are told), never again in this pull; the origin starts over
        (the caller deletes the partial)."""
        for holder in live.peers:
            live.distrusted.add(holder.node)
            self._safe(lambda h=holder: self.registry.distrust(live.target.ref, h.node))  # type: ignore[misc]
        nodes = ", ".join(sorted(h.node for h in live.peers))
        live.peers, live.peer_failed, live.verifying = [], True, None
        self.on_note(f"{message}: bad bytes from {nodes}; dropped them, fetching from the origin")
        live.retry_at = time.monotonic()

    def keep_locks(self, lives: Iterable[Live]) -> None:
        """Extend this node's origin-fetch locks and "fetching" records (every 10 s) while
        their downloads live."""
        now = time.monotonic()
        for live in lives:
            if live.fetch_lock is not None and now - live.extended_at > 10:
                live.extended_at = now
                self._safe(live.fetch_lock.extend)
            if live.fetching_at and now - live.fetching_at > 10:
                self.fetching(live)

    def detach_lock(self, live: Live, token_file: Path) -> None:
        """Keep ``live``'s origin-fetch lock while the daemon downloads on without a watcher:
        extended to ``DETACHED_LOCK_TTL`` and its token written down for whoever looks next
        (``status``: ``keep_detached_locks``; ``pull``: ``adopt_lock``)."""
        from cmcache.adapters.cluster.registry import DETACHED_LOCK_TTL

        lock = live.fetch_lock
        if lock is None or not self._safe(lambda: lock.extend(DETACHED_LOCK_TTL)):
            return
        body = json.dumps({"ref": live.target.ref, "token": lock.token})
        write_atomic(token_file, body.encode(), mode=0o600)
        live.fetch_lock = None  # handed over: this process must not free it

    def adopt_lock(self, live: Live, token_file: Path) -> None:
        """Take back a detached download's origin-fetch lock (see ``detach_lock``)."""
        found = _read_token(token_file)
        if found is not None and live.fetch_lock is None:
            live.fetch_lock = self.registry.fetch_lock(live.target.ref, found[1])
        live.token_file = token_file

    def announce(self, ref: str, sha256: str, size: int) -> None:
        """This node now holds ``ref``."""
        self._safe(lambda: self.registry.announce(ref, sha256, size))

    def withdraw(self, ref: str) -> None:
        """This node no longer holds ``ref``."""
        self._safe(lambda: self.registry.withdraw(ref))


def peer_timeout(download: DownloadSettings) -> int:
    """Seconds a peer may send nothing before the origin takes over."""
    return min(PEER_TIMEOUT, download.timeout)


def peer_options(
    download: DownloadSettings,
    split: int | None,
    partial: bool = False,
    parent_split: str | None = None,
) -> dict[str, str]:
    """aria2 options for a download from peers: a peer that stops answering costs seconds.

    From ``partial`` holders (nodes still fetching) a piece they do not have yet is answered
    503 after a hold: aria2 retries it a second later for as long as it takes (the pull's own
    stall check, ``peer_timeout``, ends a copy that gets nothing), and keeps connections free
    for the peers added while it runs (``Cluster.more_sources``). From one relay parent alone
    (``parent_split``: the segments it fetches in, as this node would from the origin) every
    connection goes to it and waits at one of its growing frontiers.
    """
    options = {
        "max-tries": "0" if partial else "2",
        "retry-wait": "1",
        "connect-timeout": "5",
        "timeout": str(peer_timeout(download)),
        "split": str(split or download.split or PEER_SPLIT),
    }
    if partial:
        options |= {"split": str(split or SWARM_SPLIT), "max-connection-per-server": "4"}
    if parent_split:
        options |= {"split": parent_split, "max-connection-per-server": parent_split}
    return options


def hand_over(live: Live, message: str, on_note: Callable[[str], None]) -> None:
    """Peers stopped serving: other sources resume the partial, else the origin on this node's
    turn (the whole-file check still judges every byte); the peers used are not asked again in
    the same role. Signatures that lapsed during a long transfer are renewed once."""
    from cmcache.adapters.cluster.server import SIGNATURE_TTL

    if time.monotonic() - live.signed_at < 0.9 * SIGNATURE_TTL:
        # Not the holders added while it ran (``more_sources``): aria2 gives them no connection
        # while it retries the peers it began with.
        live.gone.update((p.node, p.partial) for p in live.began_with)
        on_note(f"{message}: the peer stopped serving it; finishing from the origin or a peer")
    live.retry_at = time.monotonic()


def _read_token(path: Path) -> tuple[str, str] | None:
    """(ref, token) from a detached download's token file, if it is readable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return str(doc["ref"]), str(doc["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep_detached_locks(settings: Settings, store: ModelStore, running: Iterable[Job]) -> None:
    """Extend the origin-fetch locks of detached downloads still running here (``status``
    calls this after placing what finished); free those whose download is gone."""
    from cmcache.adapters.cluster.registry import DETACHED_LOCK_TTL

    files = list(store.locks_dir.glob("*.fetch")) if store.locks_dir.is_dir() else []
    if not files or not settings.cluster.enabled:
        return
    alive = {store.fetch_token_path(j.folder, j.filename) for j in running}
    with contextlib.suppress(ClusterUnavailable):
        registry = registry_for(settings)
        for path in files:
            found = _read_token(path)
            if found is not None:
                lock = registry.fetch_lock(*found)
                if path in alive:
                    lock.extend(DETACHED_LOCK_TTL)
                    continue
                lock.release()
            path.unlink(missing_ok=True)


def cluster_for(settings: Settings, on_note: Callable[[str], None]) -> Cluster | None:
    """The cluster for a pull, or None (not configured, or Redis down: said once)."""
    if not settings.cluster.enabled:
        return None
    try:
        return Cluster(settings, registry_for(settings, on_note), on_note)
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


def cluster_status(
    settings: Settings, on_bad: Callable[[str], None] | None = None
) -> ClusterStatus:
    """The cluster as Redis sees it; ``on_bad`` hears of malformed records left out.

    Raises:
        ClusterUnavailable: not configured, or Redis unreachable (exit 5).
    """
    registry = registry_for(settings, on_bad)
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
