"""Verify managed files against their hashes, and adopt files already under root (scan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.cache.index import FileRecord
from cmcache.cache.store import CACHE_DIR
from cmcache.cache.verify import fingerprint, sha256_file

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cmcache.cache.index import Index
    from cmcache.cache.store import ModelStore
    from cmcache.catalog import Catalog


@dataclass(frozen=True)
class Checked:
    """The verdict on one managed file."""

    folder: str
    filename: str
    status: str  # ok | bad | missing
    expected: str | None
    actual: str | None

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


def verify_files(
    index: Index, store: ModelStore, catalog: Catalog, refs: Iterable[tuple[str, str]] | None = None
) -> list[Checked]:
    """Re-hash managed files: against the manifest's sha256, else the one recorded at download."""
    wanted = set(refs) if refs is not None else None
    results = []
    for record in index.files():
        key = (record.folder, record.filename)
        if wanted is not None and key not in wanted:
            continue
        entry = catalog.get(f"{record.folder}/{record.filename}")
        expected = (entry.sha256 if entry else None) or record.sha256
        path = store.final_path(record.folder, record.filename)
        if not path.is_file():
            results.append(Checked(*key, "missing", expected, None))
            continue
        actual = sha256_file(path)
        status = "ok" if expected is None or actual == expected else "bad"
        if status == "ok":  # a touched mtime is fine once the bytes are proven
            fp = fingerprint(path)
            index.record_file(
                FileRecord(
                    *key, fp[0], actual, fp[1], fp[2], record.source, record.url, record.added
                )
            )
        results.append(Checked(*key, status, expected, actual))
    return results


@dataclass(frozen=True)
class Scanned:
    """A file found under root that matches a catalog entry."""

    folder: str
    filename: str
    adopted: bool
    size: int
    reason: str = ""

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


def scan(index: Index, store: ModelStore, catalog: Catalog) -> list[Scanned]:
    """Adopt files at a catalog entry's path whose size and sha256 (when known) match."""
    found: list[Scanned] = []
    if not store.root.is_dir():
        return found
    for folder in sorted(p for p in store.root.iterdir() if p.is_dir() and p.name != CACHE_DIR):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            filename = path.relative_to(folder).as_posix()
            entry = catalog.get(f"{folder.name}/{filename}")
            if entry is None or index.get_file(folder.name, filename) is not None:
                continue
            fp = fingerprint(path)
            if entry.exact_size is not None and fp[0] != entry.exact_size:
                found.append(
                    Scanned(
                        folder.name,
                        filename,
                        False,
                        fp[0],
                        f"size {fp[0]} differs from the manifest's {entry.exact_size}",
                    )
                )
                continue
            sha = sha256_file(path)
            if entry.sha256 is not None and sha != entry.sha256:
                found.append(
                    Scanned(
                        folder.name, filename, False, fp[0], "sha256 differs from the manifest's"
                    )
                )
                continue
            index.record_file(
                FileRecord(
                    folder.name, filename, fp[0], sha, fp[1], fp[2], entry.source, entry.urls[0]
                )
            )
            found.append(Scanned(folder.name, filename, True, fp[0]))
    return found
