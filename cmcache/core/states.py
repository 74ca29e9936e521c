"""Every state and outcome name cmcache reports, each written once."""

from __future__ import annotations

import enum


class _Names(str, enum.Enum):
    """A string enum (``enum.StrEnum`` needs Python 3.11): compares and prints as its value."""

    def __str__(self) -> str:
        return str(self.value)


class LocalState(_Names):
    """A catalog model on this machine."""

    CACHED = "cached"
    PINNED = "pinned"  # cached and protected from pruning
    PARTIAL = "partial"  # a download of it is under way or interrupted
    MISSING = "missing"
    EXTERNAL = "external"  # present in a folder cmcache does not manage
    UNVERIFIED = "unverified"  # a file at its path that cmcache has not verified as it


class PullOutcome(_Names):
    """What a pull did for one model."""

    DOWNLOADED = "downloaded"
    CACHED = "cached"
    FAILED = "failed"
    PLANNED = "planned"  # --dry-run
    QUEUED = "queued"  # --detach
    UNKNOWN = "unknown"  # a workflow names it; nothing can supply it
    REFUSED = "refused"  # a workflow declares it; its host, name or hash is not accepted

    @property
    def ok(self) -> bool:
        """The model is present and verified."""
        return self in (PullOutcome.DOWNLOADED, PullOutcome.CACHED)


class TransferStatus(_Names):
    """A download as aria2 reports it."""

    ACTIVE = "active"
    WAITING = "waiting"
    PAUSED = "paused"
    ERROR = "error"
    COMPLETE = "complete"
    REMOVED = "removed"

    @property
    def done(self) -> bool:
        """Finished, successfully or not."""
        return self in (TransferStatus.COMPLETE, TransferStatus.ERROR, TransferStatus.REMOVED)

    @property
    def busy(self) -> bool:
        """Running or about to run."""
        return self in (TransferStatus.ACTIVE, TransferStatus.WAITING)


class ProgressState(_Names):
    """A moment of one download, for progress bars."""

    WAITING = "waiting"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    VERIFYING = "verifying"
    LOCKED = "locked"  # another process holds the target
    DONE = "done"
    FAILED = "failed"


class QueueGap(_Names):
    """Why `status` has no aria2 state for a queued job."""

    STOPPED = "stopped"  # the daemon is not running
    LOST = "lost"  # the daemon runs but no longer knows the job


class ListStatus(_Names):
    """What sync did with one list."""

    UNCHANGED = "unchanged"
    UPDATED = "updated"
    ADDED = "added"
    REMOVED = "removed"
    FAILED = "failed"

    @property
    def changes(self) -> bool:
        """The list was (or, with --check, would be) changed."""
        return self in (ListStatus.UPDATED, ListStatus.ADDED, ListStatus.REMOVED)


class CheckStatus(_Names):
    """The verdict of `verify` on one managed file."""

    OK = "ok"
    BAD = "bad"
    MISSING = "missing"
    SKIPPED = "skipped"  # its path leaves root (a symlink): not touched


class DiskState(_Names):
    """What a file on disk is to cmcache (`du`); each file has exactly one."""

    MANAGED = "managed"  # placed or adopted by cmcache, unchanged since, not pinned
    PINNED = "pinned"  # managed and pinned
    EXTERNAL = "external"  # in a folder of extra_model_paths outside root
    UNMANAGED = "unmanaged"  # under root, put there by someone else
    PARTIAL = "partial"  # a download's staging file (<root>/.cmcache/staging/)
