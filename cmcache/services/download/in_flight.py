"""One download in flight: what is known of it, and the checks made on each look at it."""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.adapters.storage.hashing import GrowingHash
from cmcache.adapters.storage.jobs import Job
from cmcache.core.errors import IntegrityError
from cmcache.core.states import ProgressState, TransferStatus
from cmcache.core.targets import Progress
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Iterable
    from concurrent.futures import Future
    from pathlib import Path

    from cmcache.adapters.aria2.client import Transfer
    from cmcache.adapters.cluster.registry import FetchLock, Holder
    from cmcache.adapters.http.resolve import Resolved
    from cmcache.adapters.storage.locks import FileLock
    from cmcache.core.targets import Target

STALL_RATE = 1024  # bytes/s below which a download counts as stalled
FEED_STEP = 4 << 20  # the growing hash reads at least this much at a time
RETRY_CODES = {"1", "2", "5", "6", "19", "22", "24", "29"}  # transient: resume after a pause
CLEAN_RESTART_CODES = {"8", "13"}  # resume impossible or a stale file in the way
DISK_FULL = "9"
JUST_BEGUN = 2.0  # seconds after its start a download is looked at every EARLY_POLL
EARLY_POLL = 0.05
# aria2's exit codes (its manual, "EXIT STATUS") in words a user can act on.
ARIA2_ERRORS = {
    "1": "an unknown error",
    "2": "timed out: no data for download.timeout seconds",
    "3": "the server answered 404 Not Found",
    "5": "too slow (below lowest-speed-limit)",
    "6": "a network problem",
    "7": "unfinished downloads at shutdown",
    "8": "the server does not support resuming",
    "9": "not enough disk space",
    "13": "the file already exists",
    "19": "the host name could not be resolved",
    "22": "the server answered an HTTP error",
    "24": "the server refused the credentials",
    "32": "the checksum did not match",
}


def describe_aria2_error(code: str, message: str) -> str:
    """aria2's error as a sentence: what its code means, then its own message."""
    meaning = ARIA2_ERRORS.get(code, "an error")
    return f"aria2 error {code} ({meaning}): {message or 'no message'}"


class NextStep(enum.Enum):
    """What to do after aria2 reports an error."""

    DISK_FULL = "disk full"
    START_OVER = "start over"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    """Why a running download must stop."""

    message: str
    overshoot: bool  # more bytes than expected (an integrity failure), else a stall


@dataclass
class Live:
    """A target this process is downloading (or waiting to retry)."""

    target: Target
    lock: FileLock
    gid: str = ""
    engine_url: str = ""
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)
    resolved: Resolved | None = None
    retry_at: float | None = None
    clean_restarts: int = 0
    last: Transfer | None = None
    mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))  # progress
    verifying: Future[tuple[str, int]] | None = None
    via: str = "origin"  # or "peer": other nodes of the cluster serve it
    peers: list[Holder] = field(default_factory=list)  # the nodes serving it now (via "peer")
    began_with: list[Holder] = field(default_factory=list)  # those of them it started with
    signed_at: float = 0.0  # when the peers' URLs were signed (they expire)
    peer_failed: bool = False  # peers sent bad bytes: the origin starts over
    distrusted: set[str] = field(default_factory=set)  # nodes whose bytes failed the check
    gone: set[tuple[str, bool]] = field(default_factory=set)  # (node, partial) that broke off
    fetching_at: float = 0.0  # when this node last told the cluster it fetches this (0: not)
    looked_at: float = 0.0  # when the cluster was last asked for more peers (via "peer")
    fetch_lock: FetchLock | None = None  # this node's turn to fetch it from the origin
    relay: tuple[list[str], int] | None = None  # the line copying it as it is fetched, our place
    relay_at: float = 0.0  # when this node joined that line
    token_file: Path | None = None  # where a detached download left its fetch lock's token
    extended_at: float = 0.0
    noted_wait: bool = False
    origin_sha: str | None = None  # what the origin announced, asked once (see cluster)
    origin_asked: bool = False
    growing: GrowingHash | None = None  # sha256 of the final prefix, kept up while it grows
    feeding: Future[None] | None = None

    def follow(self, gid: str, engine_url: str, *, hash_early: bool) -> None:
        """A new aria2 download carries this target: a hash of earlier bytes may not fit it.

        The early hash is kept for files whose sha256 is known: a mismatch is then read
        again whole, so a doubtful early hash costs time, never a wrong record.
        """
        self.gid, self.engine_url = gid, engine_url
        early = hash_early and self.expected_sha is not None
        self.growing = GrowingHash(self.target.staging) if early else None
        self.feeding = None

    def hash_due(self, transfer: Transfer) -> int | None:
        """How far to feed the growing hash now; None when little is new or a feed runs."""
        if self.growing is None or (self.feeding is not None and not self.feeding.done()):
            return None
        if transfer.final_prefix - self.growing.hashed < FEED_STEP:
            return None
        return transfer.final_prefix

    @property
    def expected_sha(self) -> str | None:
        """The manifest's sha256, else the one the origin announced. Never a peer's claim:
        peers are chosen for announcing this hash, and then proven by it."""
        if self.target.entry.sha256:
            return self.target.entry.sha256
        if self.resolved is not None and self.resolved.sha256:
            return self.resolved.sha256
        return self.origin_sha

    @property
    def expected_size(self) -> int | None:
        """The manifest's exact size, else the one the origin announced, else (from peers) the
        size they announce: a wrong one only fails the check, which sends the pull to the
        origin."""
        size = self.target.entry.exact_size or (self.resolved.size if self.resolved else None)
        if size is None and self.via == "peer" and self.peers:
            return self.peers[0].size
        return size

    def check_announced_size(self) -> None:
        """Refuse an origin that announces more (or fewer) bytes than the manifest states.

        Raises:
            IntegrityError: the sizes differ.
        """
        want = self.target.entry.exact_size
        announced = self.resolved.size if self.resolved else None
        if want is not None and announced and announced != want:
            raise IntegrityError(
                f"{self.target.ref}: size mismatch: the origin serves {announced} bytes, "
                f"the manifest says {want}",
                ref=self.target.ref,
            )

    def check(self, transfer: Transfer, window: float) -> Verdict | None:
        """Whether an active download sent more than expected, or stalled: less than
        ``STALL_RATE`` bytes/s over ``window`` seconds."""
        ref, want = self.target.ref, self.expected_size
        if want is not None and transfer.completed > want:
            return Verdict(f"{ref}: the origin sent more than the {want} bytes expected", True)
        now = time.monotonic()
        mark_at, mark_bytes = self.mark
        if transfer.completed - mark_bytes >= STALL_RATE * window:
            self.mark = (now, transfer.completed)
            return None
        if now - mark_at < window:
            return None
        self.mark = (now, transfer.completed)
        got = transfer.completed - mark_bytes
        return Verdict(f"{ref}: stalled: {got} bytes in the last {now - mark_at:.0f}s", False)

    def after_error(self, code: str) -> NextStep:
        """aria2's error ``code`` → the next step (docs/aria2.md: a 0-byte control file or
        error 8 means start clean, once)."""
        if code == DISK_FULL:
            return NextStep.DISK_FULL
        control = self.target.control
        control_empty = control.exists() and control.stat().st_size == 0
        if code in CLEAN_RESTART_CODES or control_empty:
            return NextStep.START_OVER if self.clean_restarts < 1 else NextStep.FAIL
        return NextStep.RETRY if code in RETRY_CODES else NextStep.FAIL

    def job(self, priority: int, seq: int) -> Job:
        """The index's record of this download, with the origin's validators of now."""
        entry, validators = (
            self.target.entry,
            self.resolved.validators if self.resolved else ("", ""),
        )
        return Job(
            self.gid,
            self.engine_url,
            entry.folder,
            entry.filename,
            str(self.target.staging),
            priority,
            seq,
            self.expected_sha,
            self.expected_size,
            entry.source,
            redact(entry.urls[0]),
            owner_pid=os.getpid(),
            etag=validators[0],
            last_modified=validators[1],
        )

    def progress(self) -> Progress:
        """This download's moment, for progress bars."""
        t = self.last
        if self.verifying:
            state = ProgressState.VERIFYING
        elif t is not None and t.status == TransferStatus.ACTIVE:
            state = ProgressState.DOWNLOADING
        elif t is not None and t.status == TransferStatus.PAUSED:
            state = ProgressState.PAUSED
        else:
            state = ProgressState.WAITING
        done, total, speed = (t.completed, t.total, t.speed) if t else (0, 0, 0)
        return Progress(self.target.ref, state, done, total, speed)


def origin_changed(job: Job, now: Resolved) -> bool:
    """Whether the origin now serves other bytes than when ``job`` started (its ETag,
    Last-Modified or size changed): resuming would mix two versions into one file."""
    etag, modified = now.validators
    return bool(
        (job.etag and etag and job.etag != etag)
        or (job.last_modified and modified and job.last_modified != modified)
        or (job.size is not None and now.size is not None and job.size != now.size)
    )


def next_poll(lives: Iterable[Live], poll: float) -> float:
    """Seconds until the next look: ``poll``, or less when a download is about to finish, or
    began less than ``JUST_BEGUN`` ago with no speed to tell by (a small file is often done by
    then: a whole ``poll`` would be most of its pull)."""
    delay, now = poll, time.monotonic()
    for live in lives:
        t = live.last
        if t is not None and t.status == TransferStatus.ACTIVE and t.speed > 0 and t.total:
            delay = min(delay, (t.total - t.completed) / t.speed)
        elif now - live.started < JUST_BEGUN and (t is None or t.status.busy):
            delay = min(delay, EARLY_POLL)
    return max(0.02, delay)
