"""The files of a folder tree in one pass, and hard links made in place without a gap."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, NamedTuple

from cmcache.core.files import remove_quietly
from cmcache.core.processes import crash_point

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

# A spare name `link_in_place` makes beside a file; one left behind by a crash is removable.
LINK_PREFIX = ".cmcache-link-"


class Found(NamedTuple):
    """A regular file and its one stat."""

    rel: str  # relative to the walked folder, '/'-separated
    size: int
    mtime_ns: int
    dev: int
    ino: int
    nlink: int

    @property
    def inode(self) -> tuple[int, int]:
        """(device, inode): what every hard link of one file shares."""
        return self.dev, self.ino

    @property
    def fingerprint(self) -> tuple[int, int, int]:
        """(size, mtime_ns, inode), as the index records a verified file."""
        return self.size, self.mtime_ns, self.ino

    @property
    def spare_link(self) -> bool:
        """A spare name from an interrupted `link_in_place`."""
        return self.rel.rsplit("/", 1)[-1].startswith(LINK_PREFIX)


def walk(top: Path, skip: Collection[str] = ()) -> list[Found]:
    """Every regular file under ``top``, sorted by path, one ``lstat`` each.

    Symbolic links are not followed (what they point at is counted where it lives); entries of
    ``top`` named in ``skip`` are left out; a folder that cannot be read is passed over.
    """
    found: list[Found] = []
    stack = [("", str(top))]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if not prefix and entry.name in skip:
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((f"{prefix}{entry.name}/", entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found.append(
                    Found(
                        prefix + entry.name,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_dev,
                        st.st_ino,
                        st.st_nlink,
                    )
                )
    found.sort()
    return found


def link_in_place(
    source: Path, path: Path, *, source_is: tuple[int, int, int], path_is: tuple[int, int, int]
) -> None:
    """Make ``path`` another name of ``source``'s inode, atomically, if both are still the files
    that were looked at (``source_is`` and ``path_is``: their (size, mtime_ns, inode)).

    A hard link is made under a spare name beside ``path``, then renamed over it: readers see
    the old file or the new link, never nothing. A crash between the two steps leaves ``path``
    as it was plus the spare name (one more link of ``source``, no extra bytes).

    Raises:
        FileChangedError: either file changed since it was looked at (nothing is changed).
        OSError: the link or the rename failed (``path`` is then as it was).
    """
    digest = hashlib.sha256(path.name.encode(errors="surrogateescape")).hexdigest()[:16]
    spare = path.with_name(LINK_PREFIX + digest)
    remove_quietly(spare)
    os.link(source, spare, follow_symlinks=False)
    try:
        # The spare is what was linked: it must be the inode that was looked at.
        if _fingerprint(spare) != source_is or _fingerprint(path) != path_is:
            raise FileChangedError(f"{source} or {path} changed while linking")
        crash_point("dedupe-linked")
        os.replace(spare, path)
    except BaseException:
        remove_quietly(spare)
        raise


class FileChangedError(OSError):
    """A file is no longer the one that was looked at."""


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino
