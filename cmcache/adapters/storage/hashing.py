"""Hashing and stat fingerprints: verify once, then trust size+mtime+inode."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import io
    from collections.abc import Callable

BUFFER = 8 * 1024 * 1024  # large reads keep hashlib near memory bandwidth


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, read in large blocks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            if on_bytes:
                on_bytes(n)
    return digest.hexdigest()


def fingerprint(path: Path) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): unchanged means the verified bytes are still there.

    A folder (a whole repository, one model) counts the bytes of every file under it and the
    newest mtime of any file or folder in it, so a file added, removed or rewritten shows.
    """
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime_ns, st.st_ino
    size, newest = 0, st.st_mtime_ns
    for base, folders, files in os.walk(path):
        for name in folders:
            newest = max(newest, (Path(base) / name).stat().st_mtime_ns)
        for name in files:
            child = (Path(base) / name).stat()
            size += child.st_size
            newest = max(newest, child.st_mtime_ns)
    return size, newest, st.st_ino


def folder_files(path: Path) -> list[tuple[str, Path]]:
    """Every file under a folder, with its path relative to it (``/``-separated), sorted."""
    found = []
    for base, _folders, files in os.walk(path):
        for name in files:
            full = Path(base) / name
            found.append((full.relative_to(path).as_posix(), full))
    return sorted(found)


def tree_digest(path: Path) -> tuple[str, int]:
    """(digest, bytes) of a folder: the sha256 over each file's path and sha256 (see
    ``core.hubs.repo_digest``), every file read once."""
    from cmcache.core.hubs import repo_digest

    pairs, size = [], 0
    for relative, full in folder_files(path):
        pairs.append((relative, sha256_file(full)))
        size += full.stat().st_size
    return repo_digest(pairs), size


class GrowingHash:
    """SHA-256 of a file still being written, fed from its start as its prefix becomes final.

    The caller says how far the file is final (``advance``); ``finish`` reads the rest. Only
    one thread may use it at a time. If the file was replaced meanwhile (another inode) or is
    shorter than what was hashed, ``finish`` hashes the whole file again instead.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hashed = 0
        self._digest = hashlib.sha256()
        self._inode: int | None = None

    def advance(self, upto: int) -> None:
        """Hash the bytes from where it stopped up to ``upto`` (they will not change)."""
        if upto <= self.hashed:
            return
        try:
            with self.path.open("rb", buffering=0) as handle:
                inode = os.fstat(handle.fileno()).st_ino
                if self._inode is not None and inode != self._inode:
                    return  # replaced: finish() starts over
                self._inode = inode
                handle.seek(self.hashed)
                self.hashed += self._feed(handle, upto - self.hashed)
        except OSError:
            return  # finish() decides

    def finish(self) -> tuple[str, int]:
        """(sha256, size) of the whole file: the rest read now, or all of it if in doubt."""
        with self.path.open("rb", buffering=0) as handle:
            st = os.fstat(handle.fileno())
            if self._inode not in (None, st.st_ino) or st.st_size < self.hashed:
                handle.seek(0)
                self.hashed, self._digest = 0, hashlib.sha256()
            handle.seek(self.hashed)
            self.hashed += self._feed(handle, st.st_size - self.hashed)
        return self._digest.hexdigest(), self.hashed

    def _feed(self, handle: io.FileIO, length: int) -> int:
        buffer = bytearray(min(BUFFER, max(length, 1)))
        view, fed = memoryview(buffer), 0
        while fed < length:
            n = handle.readinto(view[: min(len(buffer), length - fed)])
            if not n:
                break
            self._digest.update(view[:n])
            fed += n
        return fed
