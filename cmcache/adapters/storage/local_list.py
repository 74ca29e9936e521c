"""The local list: models pulled by a link, an ``hf:`` or a Civitai ref, remembered.

``<state>/local.json`` is a list in the cmcache format (schema 1), read like any synced list;
each entry's ``aliases`` are the refs it was pulled with, so the same ref finds it again without
asking the network. Changes are made under a lock and written temp-then-replace.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import CacheError, ManifestError
from cmcache.core.files import write_atomic
from cmcache.core.manifest.formats import parse_manifest

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from cmcache.core.manifest.entry import Entry

LOCAL = "local"
LOCK_WAIT = 30.0


class LocalList:
    """Read and change ``local.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(path.with_name(path.name + ".lock"))

    def entries(self) -> tuple[list[Entry], str | None]:
        """The remembered entries, and a warning when the file cannot be read."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        except OSError as exc:
            return [], f"the local list {self.path} cannot be read: {exc.strerror or exc}"
        try:
            parsed = parse_manifest(data, list_name=LOCAL, fmt="cmcache", source=LOCAL)
        except ManifestError as exc:
            return [], f"{exc.message} ({self.path})"
        return list(parsed.entries), None

    def remember(self, entries: Iterable[Entry]) -> None:
        """Add or replace entries (by ``folder/filename``). A ref an entry was pulled with
        leaves every other entry, so it names one model only.

        Raises:
            CacheError: the list is locked for too long, unreadable, or cannot be written.
        """
        new = list(entries)
        if not new:
            return
        with self._locked():
            kept = self._current()
            refs = {e.ref for e in new}
            aliases = {a.lower() for e in new for a in e.aliases}
            kept = [e for e in kept if e.ref not in refs]
            models = [_without_aliases(_model(e), aliases) for e in kept]
            self._write(models + [_model(e) for e in new])

    def forget(self, refs: Iterable[str]) -> list[str]:
        """Drop the entries of these ``folder/filename`` refs; returns those dropped."""
        gone = set(refs)
        with self._locked():
            kept = self._current()
            dropped = [e.ref for e in kept if e.ref in gone]
            if dropped:
                self._write([_model(e) for e in kept if e.ref not in gone])
        return dropped

    def _locked(self) -> FileLock:
        if not self._lock.acquire(timeout=LOCK_WAIT):
            raise CacheError(f"the local list {self.path} is locked by another cmcache")
        return self._lock

    def _current(self) -> list[Entry]:
        entries, problem = self.entries()
        if problem:  # never replace a list we cannot read: it would lose what it holds
            raise CacheError(problem, hint=f"fix or move {self.path} aside")
        return entries

    def _write(self, models: list[dict[str, Any]]) -> None:
        doc = {"schema": 1, "name": LOCAL, "version": "", "models": models}
        try:
            write_atomic(self.path, json.dumps(doc, indent=1, ensure_ascii=False).encode())
        except OSError as exc:
            raise CacheError(f"cannot write {self.path}: {exc.strerror or exc}") from None


def _model(entry: Entry) -> dict[str, Any]:
    model: dict[str, Any] = {
        "folder": entry.folder,
        "filename": entry.filename,
        "url": entry.urls[0],
    }
    if entry.urls[1:]:
        model["mirrors"] = list(entry.urls[1:])
    if entry.sha256:
        model["sha256"] = entry.sha256
    if entry.exact_size is not None:
        model["size"] = entry.exact_size
    for key, value in (("name", entry.name), ("description", entry.description)):
        if value:
            model[key] = value
    if entry.aliases:
        model["aliases"] = list(dict.fromkeys(entry.aliases))
    return model


def _without_aliases(model: dict[str, Any], taken: set[str]) -> dict[str, Any]:
    aliases = [a for a in model.get("aliases", []) if a.lower() not in taken]
    rest = {k: v for k, v in model.items() if k != "aliases"}
    return {**rest, "aliases": aliases} if aliases else rest
