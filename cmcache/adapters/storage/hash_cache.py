"""sha256 of files cmcache does not manage, remembered by size, mtime and inode.

Kept at ``<root>/.cmcache/hashes.json`` so `report --hash` hashes a file once until it changes,
and `dedupe` can trust the same fingerprint the index trusts for managed files.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cmcache.core.files import write_atomic
from cmcache.core.names import SHA256_RE

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

SCHEMA = 1
HASHES = "hashes.json"  # the file, in <root>/.cmcache
Fingerprint = tuple[int, int, int]  # (size, mtime_ns, inode)


class HashCache:
    """path (relative to root) → (fingerprint, sha256); a stale or foreign entry is only a miss."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files = _read(path)
        self._changed = False

    def get(self, rel: str, fingerprint: Fingerprint) -> str | None:
        """The sha256 of ``rel`` if it was hashed with this very fingerprint."""
        entry = self._files.get(rel)
        if entry is None or tuple(entry[:3]) != fingerprint:
            return None
        return str(entry[3])

    def put(self, rel: str, fingerprint: Fingerprint, sha: str) -> None:
        """Remember the sha256 of ``rel`` as it is now."""
        self._files[rel] = [*fingerprint, sha]
        self._changed = True

    def keep_only(self, present: Collection[str]) -> None:
        """Forget files that are no longer there."""
        gone = set(self._files) - set(present)
        for rel in gone:
            del self._files[rel]
        self._changed = self._changed or bool(gone)

    def save(self) -> bool:
        """Write the cache if it changed (temp, then replace); False when it cannot be written."""
        if not self._changed:
            return True
        doc = {"schema": SCHEMA, "files": self._files}
        try:
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")).encode(), mode=0o600)
        except OSError:
            return False  # a read-only root: the hashes are only a cache
        self._changed = False
        return True


def _read(path: Path) -> dict[str, list[int | str]]:
    """The entries of a cache file of this schema; anything else reads as empty."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None
    if not isinstance(files, dict):
        return {}
    return {
        rel: entry
        for rel, entry in files.items()
        if isinstance(entry, list)
        and len(entry) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[:3])
        and isinstance(entry[3], str)
        and SHA256_RE.fullmatch(entry[3])
    }
