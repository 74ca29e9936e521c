"""The model tree on disk: final paths under root, staging beside them, and local state."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from typing import TYPE_CHECKING

from cmcache.core.comfyui import MODERN_TO_LEGACY
from cmcache.core.errors import CacheError, ManifestError
from cmcache.core.manifest.safety import location_problem
from cmcache.core.sizes import format_size
from cmcache.core.states import LocalState
from cmcache.core.targets import Target

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from cmcache.core.manifest.entry import Entry

CACHE_DIR = ".cmcache"
STAGING_TAIL = 96  # bytes of the model's file name kept in its staging name
TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file marks the cmcache bookkeeping folder; backup tools may skip it.\n"
)


class ModelStore:
    """Paths under one model root; a file appears at its final path only complete and verified."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta_dir = root / CACHE_DIR
        self.staging_dir = self.meta_dir / "staging"
        self.locks_dir = self.meta_dir / "locks"
        self._disk_folders: dict[str, str] = {}

    def prepare(self) -> None:
        """Create root, staging and locks folders (staging shares root's filesystem)."""
        try:
            for folder in (self.staging_dir, self.locks_dir):
                folder.mkdir(parents=True, exist_ok=True)
            tag = self.meta_dir / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text(TAG)
        except OSError as exc:
            raise CacheError(f"cannot create {self.meta_dir}: {exc.strerror or exc}") from None

    def disk_folder(self, folder: str) -> str:
        """Where ``folder``'s files live: its current ComfyUI name, unless only the legacy
        folder exists under root (``unet`` for ``diffusion_models``, ``clip`` for
        ``text_encoders``), as in an older ComfyUI install."""
        legacy = MODERN_TO_LEGACY.get(folder)
        if legacy is None:
            return folder
        if folder not in self._disk_folders:
            use_legacy = (self.root / legacy).is_dir() and not (self.root / folder).is_dir()
            self._disk_folders[folder] = legacy if use_legacy else folder
        return self._disk_folders[folder]

    @property
    def index_path(self) -> Path:
        """The index of this root."""
        return self.meta_dir / "index.sqlite3"

    def final_path(self, folder: str, filename: str) -> Path:
        """Where a model lives; refuses anything that would land outside root.

        Raises:
            ManifestError: the location is unsafe (traversal, absolute, symlink out of root).
        """
        problem = location_problem(folder, filename)
        if problem:
            raise ManifestError(f"refusing {folder}/{filename}: {problem}")
        path = self.root / self.disk_folder(folder) / filename
        real_root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise ManifestError(f"refusing {folder}/{filename}: it resolves outside {self.root}")
        return path

    def target(self, entry: Entry) -> Target:
        """Where ``entry`` goes and where it is staged.

        Raises:
            ManifestError: the location is unsafe.
        """
        return Target(
            entry,
            self.final_path(entry.folder, entry.filename),
            self.staging_path(entry.folder, entry.filename),
        )

    def staging_name(self, folder: str, filename: str) -> str:
        """A stable staging file name per target, so an interrupted download resumes.

        A hash names the target; a short readable tail follows, cut so that the name and its
        ``.aria2`` and ``.lock`` companions stay far below the 255-byte limit of a file name.
        """
        digest = hashlib.sha256(f"{folder}/{filename}".encode()).hexdigest()[:16]
        base = filename.rsplit("/", 1)[-1].encode()[:STAGING_TAIL].decode(errors="ignore")
        return f"{digest}-{base}.incomplete"

    def staging_path(self, folder: str, filename: str) -> Path:
        """The in-progress file of a target."""
        return self.staging_dir / self.staging_name(folder, filename)

    def lock_path(self, folder: str, filename: str) -> Path:
        """The lock a download or a removal of one target holds."""
        return self.locks_dir / (self.staging_name(folder, filename) + ".lock")

    def check_space(self, target: Target, size: int | None, min_free: int | None) -> None:
        """Refuse to start a download that cannot fit (keeping ``min_free`` free).

        Raises:
            CacheError: not enough free space on root's filesystem.
        """
        if size is None:
            return
        have = target.staging.stat().st_size if target.staging.exists() else 0
        need = max(0, size - have) + (min_free or 0)
        free = shutil.disk_usage(self.staging_dir).free
        if free < need:
            extra = f" and keep {format_size(min_free)} free (cache.min_free)" if min_free else ""
            raise CacheError(
                f"{target.entry.ref}: not enough space: it needs {format_size(size - have)}"
                f"{extra}, {format_size(free)} is free on {self.root}",
                hint="free space with `cmcache prune`, or lower cache.min_free",
                ref=target.entry.ref,
            )

    def fetch_token_path(self, folder: str, filename: str) -> Path:
        """Where a detached download keeps the token of its cluster fetch lock, so the next
        `status` or `pull` that sees it can extend or free that lock."""
        return self.locks_dir / (self.staging_name(folder, filename) + ".fetch")

    def serving_lock_path(self, folder: str, filename: str, tag: str) -> Path:
        """A lock `cmcache serve` holds while it sends a file to a peer."""
        return self.locks_dir / f"{self.staging_name(folder, filename)}.serving-{tag}"

    def is_serving(self, folder: str, filename: str) -> bool:
        """Whether a peer is being sent this file now (a held serving lock)."""
        from cmcache.adapters.storage.locks import FileLock

        # The name may hold glob characters ("[", "]", "*"): match it literally.
        pattern = glob.escape(self.staging_name(folder, filename)) + ".serving-*"
        for path in self.locks_dir.glob(pattern):
            lock = FileLock(path)
            if not lock.try_acquire():
                return True
            lock.release()
        return False

    def states(self, locations: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LocalState]:
        """``state`` for many models at once: one stat each and one staging listing.

        Catalog entries were validated when synced, so no realpath walk is needed to look;
        os.path beats pathlib threefold in this loop over every catalog entry.
        """
        try:
            staged = set(os.listdir(self.staging_dir))  # noqa: PTH208
        except OSError:
            staged = set()
        out = {}
        root = str(self.root)
        for folder, filename in locations:
            path = f"{root}/{self.disk_folder(folder)}/{filename}"
            # A folder is a whole repository, one model (placed only complete).
            if os.path.isfile(path) or os.path.isdir(path):  # noqa: PTH112, PTH113
                out[folder, filename] = LocalState.CACHED
            elif staged and self.staging_name(folder, filename) in staged:
                out[folder, filename] = LocalState.PARTIAL
            else:
                out[folder, filename] = LocalState.MISSING
        return out
