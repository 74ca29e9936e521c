"""`cmcache serve`: this node's managed, verified files for its peers, and its heartbeat."""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import TYPE_CHECKING

from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import ManifestError, UsageError
from cmcache.services.cache import open_cache
from cmcache.services.cluster import registry_for
from cmcache.services.placement import unchanged

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from cmcache.core.settings.model import Settings


def serve(settings: Settings, listen: str | None = None) -> None:
    """Serve until stopped (SIGINT/SIGTERM): announce what this node holds, heartbeat."""
    from cmcache.adapters.cluster.server import make_app, run

    c = settings.cluster
    registry = registry_for(settings)
    secret = c.secret_value()
    if not secret:
        raise UsageError(
            "the cluster secret is empty",
            hint=f"set {c.secret.removeprefix('env:')} or [cluster] secret",
        )
    host, _, port = (listen or c.serve).rpartition(":")
    advertise = c.advertise or f"http://{host}:{port}"
    cache = open_cache(settings)
    store, index = cache.store, cache.index
    for record in index.files():  # the location index starts from what is really here
        registry.announce(f"{record.folder}/{record.filename}", record.sha256 or "", record.size)
    transfers = itertools.count()

    def lookup(folder: str, filename: str) -> Path | None:
        try:
            path = store.final_path(folder, filename)
        except ManifestError:
            return None  # traversal, or outside root
        record = index.get_file(folder, filename)
        if record is None or not unchanged(record, path):
            return None  # not managed, or changed since it was verified
        return path

    @contextlib.contextmanager
    def guard(folder: str, filename: str) -> Iterator[None]:
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

    def heartbeat() -> None:
        files, size = index.usage()
        registry.heartbeat(advertise, files, size)

    try:
        run(make_app(secret, lookup, guard), host, int(port), heartbeat)
    finally:
        with contextlib.suppress(Exception):
            registry.leave()
        cache.close()
