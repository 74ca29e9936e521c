"""Synced manifests on disk: ``<state>/manifests/<source>/<list>.json`` and a meta file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cmcache.core.files import remove_quietly, write_atomic
from cmcache.core.manifest.entry import Entry, entries_from_doc, entries_to_doc

if TYPE_CHECKING:
    from pathlib import Path

META_SCHEMA = 1
# The entries file: a one-line header (schema, the list's MD5), then the entries. The header is
# read alone first, so a stale or older file costs a few bytes, not a parse of the whole file.
ENTRIES_SCHEMA = 2
_HEADER_LIMIT = 256


@dataclass(frozen=True)
class ListRecord:
    """What cmcache remembers of one synced list."""

    name: str
    md5: str
    version: str
    format: str
    url: str
    entries: int
    etag: str = ""
    last_modified: str = ""


class ManifestStore:
    """Read and replace synced lists; a list's bytes are written before its meta record."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @property
    def stamp(self) -> Path:
        """A file rewritten whenever a list is stored or dropped: its mtime says "changed"."""
        return self.base / ".synced"

    def _touch_stamp(self) -> None:
        write_atomic(self.stamp, b"")

    def record_sync(self, *, ok: bool) -> None:
        """Remember when the last sync ran and whether every list came through."""
        doc = {"schema": META_SCHEMA, "at": time.time(), "ok": ok}
        write_atomic(self.base / "last_sync.json", json.dumps(doc).encode())

    def last_sync(self) -> tuple[float, bool] | None:
        """(when, ok) of the last sync, if one ran."""
        try:
            doc = json.loads((self.base / "last_sync.json").read_bytes())
            return float(doc["at"]), bool(doc["ok"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def sources(self) -> list[str]:
        """Names of the sources that have anything stored."""
        if not self.base.is_dir():
            return []
        return sorted(p.name for p in self.base.iterdir() if p.is_dir())

    def records(self, source: str) -> dict[str, ListRecord]:
        """The lists stored for ``source``; an unreadable meta file counts as none."""
        try:
            doc = json.loads((self.base / source / "meta.json").read_bytes())
        except (OSError, ValueError):
            return {}
        doc = _migrate(doc)
        lists: dict[str, Any] = doc.get("lists", {})
        fields = set(ListRecord.__dataclass_fields__)
        return {
            name: ListRecord(**{k: v for k, v in rec.items() if k in fields})
            for name, rec in lists.items()
        }

    def path(self, source: str, name: str) -> Path:
        """Where a list's bytes live."""
        return self.base / source / f"{name}.json"

    def entries_path(self, source: str, name: str) -> Path:
        """Where a list's validated entries live."""
        return self.base / source / f"{name}.entries"

    def read_entries(self, source: str, name: str, md5: str) -> list[Entry] | None:
        """The validated entries saved with the list, if they belong to these bytes."""
        try:
            with self.entries_path(source, name).open("rb") as handle:
                header = json.loads(handle.readline(_HEADER_LIMIT))
                if header != {"schema": ENTRIES_SCHEMA, "md5": md5}:
                    return None
                return entries_from_doc(json.loads(handle.read()))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def save_entries(self, source: str, name: str, md5: str, entries: tuple[Entry, ...]) -> None:
        """Store a list's validated entries (for fast loads), tied to the MD5 of its bytes."""
        header = json.dumps({"schema": ENTRIES_SCHEMA, "md5": md5}, separators=(",", ":"))
        body = json.dumps(entries_to_doc(entries), separators=(",", ":"))
        write_atomic(self.entries_path(source, name), f"{header}\n{body}".encode())

    def read(self, source: str, name: str) -> bytes | None:
        """The stored bytes of a list, or None when absent."""
        try:
            return self.path(source, name).read_bytes()
        except OSError:
            return None

    def local_md5(self, source: str, name: str) -> str | None:
        """MD5 of the stored bytes, computed afresh so a damaged copy is noticed."""
        data = self.read(source, name)
        return None if data is None else hashlib.md5(data, usedforsecurity=False).hexdigest()

    def save(
        self, source: str, record: ListRecord, body: bytes | None, entries: tuple[Entry, ...] = ()
    ) -> None:
        """Store a list: its bytes (for MD5 checks) and its validated entries (for fast loads).

        ``body`` None keeps the stored bytes and updates the record only.
        """
        if body is not None:
            write_atomic(self.path(source, record.name), body)
            self.save_entries(source, record.name, record.md5, entries)
        records = self.records(source)
        records[record.name] = record
        self._write_meta(source, records)
        self._touch_stamp()

    def drop(self, source: str, name: str) -> None:
        """Forget one list: meta first, so a crash leaves an orphan file, not a dangling record."""
        records = self.records(source)
        records.pop(name, None)
        self._write_meta(source, records)
        remove_quietly(self.path(source, name), self.entries_path(source, name))
        self._touch_stamp()

    def drop_source(self, source: str) -> None:
        """Forget everything of a source no longer configured."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.base / source)
        self._touch_stamp()

    def _write_meta(self, source: str, records: dict[str, ListRecord]) -> None:
        doc = {"schema": META_SCHEMA, "lists": {n: asdict(r) for n, r in sorted(records.items())}}
        write_atomic(self.base / source / "meta.json", json.dumps(doc, indent=1).encode())


def _migrate(doc: Any) -> dict[str, Any]:
    """Bring an older meta document up to META_SCHEMA (only schema 1 exists so far)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("lists"), dict):
        return {"schema": META_SCHEMA, "lists": {}}
    return doc
