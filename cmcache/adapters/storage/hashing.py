"""Hashing and stat fingerprints: verify once, then trust size+mtime+inode."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

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
    """(size, mtime_ns, inode): unchanged means the verified bytes are still there."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino
