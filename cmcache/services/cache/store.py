"""The cache of one root: its model store and its index, opened the same way by every service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.adapters.storage.index import Index, writable
from cmcache.adapters.storage.model_store import ModelStore
from cmcache.core.errors import CacheError, DiskFullError

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from cmcache.core.settings.model import Settings


@dataclass
class Cache:
    """A model root's files and its index."""

    store: ModelStore
    index: Index

    def close(self) -> None:
        """Close the index."""
        self.index.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_index(
    settings: Settings, path: Path, *, readonly: bool = False, why_readonly: str = ""
) -> Index:
    """The index at ``path``, keeping the use log for ``window_days`` and splitting it into
    sessions at ``session_gap_minutes``."""
    return Index(
        path,
        use_log_days=settings.prefetch.window_days,
        session_gap=settings.prefetch.session_gap,
        readonly=readonly,
        why_readonly=why_readonly,
    )


def open_cache(settings: Settings) -> Cache:
    """The store under ``cache.root`` and its index, created when missing."""
    store = ModelStore(settings.cache.root)
    store.prepare()
    return Cache(store, open_index(settings, store.index_path))


def existing_index(settings: Settings, *, readonly: bool = True) -> Index | None:
    """The index of ``cache.root`` if one exists; creates nothing. Read-only unless asked
    (and then read-only anyway when the root cannot be written)."""
    store = ModelStore(settings.cache.root)
    if not store.index_path.exists():
        return None
    if not readonly and writable(store.index_path):
        try:
            return open_index(settings, store.index_path)
        except DiskFullError as exc:  # what is present can still be answered, not remembered
            why = exc.message
            return open_index(settings, store.index_path, readonly=True, why_readonly=why)
    return open_index(settings, store.index_path, readonly=True)


def open_cache_for_reading(settings: Settings) -> Cache:
    """The cache for commands that mostly read: writable when the root is, else (a read-only
    root, a full disk) read-only.

    Raises:
        CacheError: there is no cache yet and the root cannot be written to create one.
    """
    store = ModelStore(settings.cache.root)
    if writable(store.index_path):
        try:
            return open_cache(settings)
        except DiskFullError:
            if not store.index_path.exists():
                raise
            index = existing_index(settings, readonly=False)  # read-only, saying why
            assert index is not None
            return Cache(store, index)
    index = existing_index(settings)
    if index is None:
        raise CacheError(f"{store.root} is read-only and holds no cmcache index")
    return Cache(store, index)
