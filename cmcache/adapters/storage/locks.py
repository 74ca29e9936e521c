"""Per-target advisory locks (filelock), so two cmcache processes never write one file at once.

filelock is imported on first use: read-only commands and the no-op path never need it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cmcache.core.errors import CacheError

if TYPE_CHECKING:
    from pathlib import Path

    import filelock


class FileLock:
    """An exclusive lock on a file; released on ``release`` or when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: filelock.BaseFileLock | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock is not None

    def try_acquire(self) -> bool:
        """Take the lock if free; never waits.

        Raises:
            CacheError: the lock file cannot be created (read-only or full disk).
        """
        if self._lock is not None:
            return True
        import filelock

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(self.path), mode=0o600, thread_local=False)
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return False
        except OSError as exc:
            raise CacheError(
                f"cannot create lock {self.path}: {exc.strerror or exc}",
                hint="check that the model root is writable and not full",
            ) from None
        self._lock = lock
        return True

    def acquire(self, timeout: float | None = None, poll: float = 0.2) -> bool:
        """Wait for the lock (forever when ``timeout`` is None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def release(self) -> None:
        """Give the lock back."""
        if self._lock is not None:
            self._lock.release(force=True)
            self._lock = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
