"""Placement: the one owner of verifying, committing, adopting and recording files under root.

A file reaches its final path only complete and verified (staging, hash, ``os.replace``), and
only this module writes file records, so "managed" always means "verified by cmcache".
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cmcache.adapters.storage.hashing import fingerprint, sha256_file, tree_digest
from cmcache.adapters.storage.index import FileRecord
from cmcache.core.errors import CmcacheError, IntegrityError, UnverifiedError
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cmcache.adapters.storage.index import Index
    from cmcache.core.manifest.entry import Entry
    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target


def mismatch(want_size: int | None, want_sha: str | None, size: int, sha: str | None) -> str | None:
    """Why bytes of ``size``/``sha`` are not the expected ones, or None when they are."""
    if want_size is not None and size != want_size:
        return f"size mismatch: expected {want_size}, got {size}"
    if want_sha is not None and sha is not None and sha != want_sha:
        return f"sha256 mismatch: expected {want_sha}, got {sha}"
    return None


@dataclass(frozen=True)
class Placement:
    """Records of verified files in one index."""

    index: Index
    # Asks the origin what it serves (size, sha256): one request per model, for files whose
    # manifest states neither. None: nobody to ask.
    ask_origin: Callable[[Entry], tuple[int | None, str | None]] | None = None

    def identity(self, entry: Entry) -> tuple[int | None, str | None]:
        """The exact size and sha256 a file must have to count as ``entry``.

        The manifest's, else what the origin announces.

        Raises:
            UnverifiedError: neither is known: the file's identity cannot be proven.
        """
        if entry.sha256 is not None or entry.exact_size is not None:
            return entry.exact_size, entry.sha256
        why = "the manifest states no sha256 or exact size"
        if self.ask_origin is not None:
            try:
                size, sha = self.ask_origin(entry)
            except CmcacheError as exc:
                why += f", and asking the origin failed ({exc.message})"
            else:
                if size is not None or sha is not None:
                    return size, sha
                why += ", and the origin announces neither"
        raise UnverifiedError(
            f"{entry.ref}: unverified: {why}",
            hint="`cmcache pull --force` replaces it with a verified download",
            ref=entry.ref,
        )

    def record(
        self,
        folder: str,
        filename: str,
        path: Path,
        sha: str,
        source: str,
        url: str,
        added: float = 0,
    ) -> FileRecord:
        """Remember ``path`` as verified with ``sha`` (its size, mtime and inode now)."""
        size, mtime_ns, inode = fingerprint(path)
        # The index is no place for credentials: a URL is kept without its query or userinfo.
        record = FileRecord(
            folder, filename, size, sha, mtime_ns, inode, source, redact(url), added
        )
        self.index.record_file(record)
        return record

    def record_entry(self, entry: Entry, path: Path, sha: str) -> FileRecord:
        """Remember a catalog entry's file as verified."""
        return self.record(entry.folder, entry.filename, path, sha, entry.source, entry.urls[0])

    def placed_record(self, target: Target) -> FileRecord | None:
        """The record of a managed file in place and unchanged since verified (no hashing)."""
        entry = target.entry
        record = self.index.get_file(entry.folder, entry.filename)
        if record is None or (entry.sha256 is not None and record.sha256 != entry.sha256):
            return None
        return record if unchanged(record, target.final) else None

    def present(self, target: Target, *, force: bool) -> str | None:
        """The sha256 of a target already present and verified, else None (it must be fetched).

        A managed file is trusted while its size, mtime and inode match the index (no re-hash).
        A file cmcache did not place is hashed once and adopted when it matches.

        Raises:
            IntegrityError: an unmanaged file is in the way and differs (``--force`` replaces it).
        """
        if force or not (target.final.is_file() or target.final.is_dir()):
            return None
        entry = target.entry
        record = self.index.get_file(entry.folder, entry.filename)
        if target.final.is_dir():  # a whole repository: only a copy cmcache placed counts
            same = record is not None and (entry.sha256 is None or record.sha256 == entry.sha256)
            if same and record is not None and unchanged(record, target.final):
                return record.sha256 or ""
            if record is not None:
                return None  # ours, changed or of another revision: fetch it again
            raise IntegrityError(
                f"{entry.ref}: {target.final} is a folder cmcache did not place",
                hint="use --force to replace it (its files are fetched again)",
                ref=entry.ref,
            )
        if record is not None and unchanged(record, target.final):
            if entry.sha256 is None or record.sha256 == entry.sha256:
                return record.sha256 or ""
            return None  # the manifest now names other bytes: fetch them
        want_size, want_sha = self.identity(entry)
        size = fingerprint(target.final)[0]
        problem = mismatch(want_size, None, size, None)
        if problem is None:
            sha = sha256_file(target.final)
            problem = mismatch(None, want_sha, size, sha)
        if problem is not None:
            if record is not None:
                return None  # ours, changed: download again
            raise IntegrityError(
                f"{entry.ref}: {target.final} exists but differs: {problem}",
                hint="use --force to replace it",
                ref=entry.ref,
            )
        self.record_entry(entry, target.final, sha)
        return sha

    def commit(
        self,
        target: Target,
        hashed: tuple[str, int],
        want_size: int | None,
        want_sha: str | None,
        url: str,
    ) -> FileRecord:
        """Check a finished staging file, record it, then move it into place atomically.

        The record comes first (a rename keeps size, mtime and inode): an index that cannot be
        written (a full disk) leaves nothing placed, never a placed file nobody recorded.

        Raises:
            IntegrityError: its size or sha256 is not the expected one (nothing is placed).
            CacheError: the index cannot record it (nothing is placed).
            OSError: the move failed (the earlier record, if any, is restored).
        """
        check_verified(target, hashed, want_size, want_sha)
        entry = target.entry
        target.final.parent.mkdir(parents=True, exist_ok=True)
        earlier = self.index.get_file(entry.folder, entry.filename)
        record = self.record(
            entry.folder, entry.filename, target.staging, hashed[0], entry.source, url
        )
        try:
            os.replace(target.staging, target.final)
        except OSError:
            with contextlib.suppress(CmcacheError):
                if earlier is None:
                    self.index.forget_file(entry.folder, entry.filename)
                else:
                    self.index.record_file(earlier)
            raise
        return record


def move_verified(
    target: Target, hashed: tuple[str, int], want_size: int | None, want_sha: str | None
) -> None:
    """Move a finished staging file to its final path if its size and sha256 are right.

    Raises:
        IntegrityError: they are not (nothing is moved).
        OSError: the move failed.
    """
    check_verified(target, hashed, want_size, want_sha)
    target.final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(target.staging, target.final)


def check_verified(
    target: Target, hashed: tuple[str, int], want_size: int | None, want_sha: str | None
) -> None:
    """Raise IntegrityError when a finished file's size or sha256 is not the expected one."""
    sha, size = hashed
    problem = mismatch(want_size, want_sha, size, sha)
    if problem is not None:
        raise IntegrityError(f"{target.ref}: {problem}", ref=target.ref)


def placement_for(settings: Settings, index: Index) -> Placement:
    """A placement that may ask the origin (with this configuration's tokens) what it serves."""

    def ask_origin(entry: Entry) -> tuple[int | None, str | None]:
        from cmcache.services.sources.refs import Sources

        sources = Sources(settings)
        try:
            concrete = sources.expand(entry)  # Hugging Face and Civitai announce a sha256
            if concrete.sha256 is not None:
                return concrete.exact_size, concrete.sha256
            resolved = sources.resolver(tries=2).resolve(concrete.urls[0])
        finally:
            sources.close()
        return resolved.size, resolved.sha256

    return Placement(index, ask_origin)


def unchanged(record: FileRecord, path: Path) -> bool:
    """Size, mtime and inode as when the file was verified: no need to hash it again."""
    try:
        return (record.size, record.mtime_ns, record.inode) == fingerprint(path)
    except OSError:
        return False


def trusted(index: Index, record: FileRecord, path: Path) -> bool:
    """Whether ``path`` still holds the bytes ``record`` verified, without hashing.

    Unchanged, or made by `dedupe` a hard link of another managed file with the same sha256 by
    a run that stopped before recording it: then the record is brought up to date here.
    """
    if unchanged(record, path):
        return True
    if record.failed_check:  # its bytes were found bad: no other name vouches for them
        return False
    try:
        now = fingerprint(path)
    except OSError:
        return False
    for other in index.files() if record.sha256 else ():
        if other.sha256 == record.sha256 and (other.size, other.mtime_ns, other.inode) == now:
            if not index.readonly:
                index.record_file(replace(record, size=now[0], mtime_ns=now[1], inode=now[2]))
            return True
    return False


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256, size) of a file, read once; of a repository's folder, its digest and bytes."""
    if path.is_dir():
        return tree_digest(path)
    return sha256_file(path), path.stat().st_size
