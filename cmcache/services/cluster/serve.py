"""`cmcache serve`: this node's managed, verified files for its peers, and its heartbeat.

The heartbeat also keeps the location index honest: when this node's heartbeat key was gone
(Redis restarted or was flushed, or this node was cut off long enough to lapse) every file is
announced again; and a file a peer complained about (its bytes failed that peer's check) is
hashed again: withdrawn and never served while bad, announced again when good.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.adapters.aria2.link import EngineLink
from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import CmcacheError, ConfigError, ManifestError, UsageError
from cmcache.core.peers import BadRecord, peer_base
from cmcache.core.pieces import CHECKING, GONE, Growing
from cmcache.core.states import TransferStatus
from cmcache.core.targets import control_file
from cmcache.services.cache.store import open_cache
from cmcache.services.cluster.node import registry_for
from cmcache.services.download.placement import hash_file, trusted

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from cmcache.adapters.cluster.registry import Registry
    from cmcache.adapters.storage.index import FileRecord
    from cmcache.core.settings.model import Settings
    from cmcache.services.cache.store import Cache

ANYWHERE = ("0.0.0.0", "::", "")  # noqa: S104 (no peer can connect to these)


def listen_address(settings: Settings, listen: str | None) -> tuple[str, int, str]:
    """(host, port, where the value came from) of ``--listen`` or ``[cluster] serve``.

    Raises:
        UsageError: ``--listen`` is not HOST:PORT with a port in 1-65535.
    """
    where = "--listen" if listen else f"[cluster] serve in {settings.paths.config_file}"
    text = listen or settings.cluster.serve
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f'{where}: expected HOST:PORT like "0.0.0.0:8765", got {text!r}')
    return host.strip("[]") if host.startswith("[") else host, int(port), where


def advertised_url(settings: Settings, host: str, port: int) -> str:
    """The URL peers reach this node at: ``[cluster] advertise``, else ``http://host:port``.

    Raises:
        ConfigError: advertise is not a plain http(s) base, or the listen address is every
            address (0.0.0.0) and nothing says which one peers should use.
    """
    c = settings.cluster
    if not c.advertise and host in ANYWHERE:
        raise ConfigError(
            f"serve listens on {host or '*'}:{port} (every address), which no peer can connect"
            " to, and [cluster] advertise is empty",
            hint=f'set [cluster] advertise = "http://<this node\'s address>:{port}"',
        )
    shown = f"[{host}]" if ":" in host else host
    try:
        return peer_base(c.advertise or f"http://{shown}:{port}")
    except BadRecord as exc:
        raise ConfigError(f"[cluster] advertise: {exc}") from None


@dataclass
class _Node:
    """What `serve` keeps between heartbeats."""

    settings: Settings
    registry: Registry
    cache: Cache
    url: str
    on_note: Callable[[str], None]
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    lost: bool = True  # announcements must be (re)made on the next heartbeat
    beats: int = 0
    link: EngineLink = field(init=False)
    checks: dict[str, Future[tuple[str, int]]] = field(default_factory=dict)
    hasher: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="cmcache-recheck")
    )

    def __post_init__(self) -> None:
        self.link = EngineLink(self.settings, keep=True)

    def lookup(self, folder: str, filename: str) -> Path | None:
        """The verified file to serve for ``folder/filename``, or None."""
        try:
            path = self.cache.store.final_path(folder, filename)
        except ManifestError:
            return None  # traversal, or outside root
        record = self.cache.index.get_file(folder, filename)
        if record is None or not trusted(self.cache.index, record, path):
            return None  # not managed, changed since it was verified, or failed a check
        return path

    def growing(self, folder: str, filename: str) -> Growing | None:
        """A download of ``folder/filename`` in progress here, to serve its finished pieces:
        only when the bytes it must end up as are known (a sha256 and size), so a reader can
        check what it got."""
        job = self.cache.index.job_for(folder, filename)
        if job is None or not job.sha256 or not job.size:
            return None
        link, staging = self.link, Path(job.staging)

        def ready_until(offset: int) -> int:
            try:
                if not link.attach():
                    return GONE
                status, pieces = link.engine(job.rpc).pieces(job.gid)
            except CmcacheError:  # the daemon is gone, or forgot the download
                return CHECKING if _all_in(staging) else GONE
            if status is TransferStatus.COMPLETE:
                return CHECKING
            if status in (TransferStatus.ERROR, TransferStatus.REMOVED):
                return GONE
            return offset if pieces is None else pieces.ready_until(offset)

        return Growing(staging, job.size, ready_until)

    def announce_all(self) -> None:
        for record in self.cache.index.files():
            if self.lookup(record.folder, record.filename) is not None:
                self.registry.announce(_ref(record), record.sha256 or "", record.size)

    def heartbeat(self) -> None:
        try:
            files, size = self.cache.index.usage()
            before = self.registry.heartbeat(self.url, files, size, self.instance)
            if self.beats and before is not None and before.instance != self.instance:
                self.on_note(
                    f"another `cmcache serve` ({before.url}) uses the node name"
                    f" {self.registry.node!r}; give each node its own [cluster] node"
                )
            if before is None or self.lost:  # Redis lost our announcements, or we were away
                self.announce_all()
                self.lost = False
            self.beats += 1
            self.recheck()
        except Exception:
            self.lost = True  # Redis went away: announce everything once it is back
            raise

    def recheck(self) -> None:
        """Hash files peers complained about (in a thread), then act on the verdicts."""
        for ref in self.registry.complaints():
            folder, _, filename = ref.partition("/")
            path = self.lookup(folder, filename)
            if path is not None and ref not in self.checks:
                self.checks[ref] = self.hasher.submit(hash_file, path)
        for ref, check in list(self.checks.items()):
            if not check.done():
                continue
            del self.checks[ref]
            folder, _, filename = ref.partition("/")
            record = self.cache.index.get_file(folder, filename)
            if record is None:
                continue
            sha, size = check.result()
            if (sha, size) == (record.sha256, record.size):
                self.registry.announce(ref, sha, size)  # the complaint was not about us
                continue
            for bad in self._names_of(record):  # hard links (`dedupe`) share the bad bytes
                self.cache.index.mark_failed_check(bad.folder, bad.filename)
                self.registry.withdraw(_ref(bad))
                self.on_note(
                    f"{_ref(bad)}: its bytes no longer match their sha256; no longer served"
                )

    def _names_of(self, record: FileRecord) -> list[FileRecord]:
        """``record`` and every other managed name of its inode."""
        return [record] + [
            r
            for r in self.cache.index.files()
            if (r.inode, r.size) == (record.inode, record.size) and r != record
        ]


def _ref(record: FileRecord) -> str:
    return f"{record.folder}/{record.filename}"


def serve(
    settings: Settings, listen: str | None = None, on_note: Callable[[str], None] | None = None
) -> None:
    """Serve until stopped (SIGINT/SIGTERM): announce what this node holds, heartbeat.

    Raises:
        UsageError: a bad ``--listen``, or the secret is empty.
        ConfigError: nowhere peers can reach, a node name another live node uses, or an
            address that cannot be listened on.
        ClusterUnavailable: Redis does not answer.
    """
    from cmcache.adapters.cluster.server import make_app, run

    note = on_note or (lambda _text: None)
    c = settings.cluster
    host, port, where = listen_address(settings, listen)
    url = advertised_url(settings, host, port)
    secret = c.secret_value()
    if not secret:
        raise UsageError(
            "the cluster secret is empty",
            hint=f"set {c.secret.removeprefix('env:')} or [cluster] secret",
        )
    registry = registry_for(settings, note)
    other = registry.node_info(registry.node)
    if other is not None and other.url != url:
        raise ConfigError(
            f"the node name {registry.node!r} is in use by a live node at {other.url}; two"
            " nodes with one name withdraw each other's models",
            hint="give each node its own [cluster] node (the default is the host name)",
        )
    cache = open_cache(settings)
    node = _Node(settings, registry, cache, url, note)  # its first heartbeat announces all
    transfers = itertools.count()

    @contextlib.contextmanager
    def guard(folder: str, filename: str) -> Iterator[None]:
        store = cache.store
        lock = FileLock(
            store.serving_lock_path(folder, filename, f"{os.getpid()}-{next(transfers)}")
        )
        lock.try_acquire()
        try:
            yield
        finally:
            lock.release()
            with contextlib.suppress(OSError):
                lock.path.unlink()

    app = make_app(
        secret,
        node.lookup,
        guard,
        stall=settings.download.timeout,
        rate=c.serve_rate,
        growing=node.growing,
    )
    try:
        run(app, host, port, node.heartbeat)
    except OSError as exc:
        error = UsageError if listen else ConfigError
        raise error(
            f"cannot listen on {host}:{port} ({where}): {exc.strerror or exc}",
            hint="pick a free port and an address of this machine",
        ) from None
    finally:
        node.hasher.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            registry.leave(node.instance)
        cache.close()


def _all_in(staging: Path) -> bool:
    """Whether aria2 wrote the last byte of ``staging``: it removes its control file then, and
    a pull forgets a finished download before its check (which it still has to pass)."""
    return staging.exists() and not control_file(staging).exists()
