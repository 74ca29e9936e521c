"""Run downloads through aria2: lock, resume or start, watch, retry, verify, place atomically.

Rules from aria2's measured behaviour (shared ARIA2.md): never ``continue`` a file without its
control file; a 0-byte control file or error 8 means start clean; verify every file ourselves
(hashing once, in Python, after the last byte); a bad file never reaches its final path.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.cache.index import FileRecord, Index, Job
from cmcache.cache.locks import FileLock
from cmcache.cache.verify import fingerprint, sha256_file
from cmcache.engine.aria2 import RpcError, Transfer
from cmcache.errors import (
    CmcacheError,
    DownloadError,
    EngineError,
    ExitCode,
    IntegrityError,
    Interrupted,
)
from cmcache.fsutil import remove_quietly
from cmcache.handoff import aria2_options, check_space, prepare_staging
from cmcache.priorities import rebalance
from cmcache.pull import placed_record
from cmcache.results import Outcome, Progress, PullOptions, Target

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cmcache.cache.store import ModelStore
    from cmcache.engine.link import EngineLink
    from cmcache.engine.resolve import Resolved, Resolver
    from cmcache.settings import Settings

POLL = 0.25
RETRY_CODES = {"1", "2", "5", "6", "19", "22", "24", "29"}  # transient: resume after a pause
CLEAN_RESTART_CODES = {"8", "13"}  # resume impossible or a stale file in the way


@dataclass
class _Live:
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
    verifying: Future[tuple[str, int]] | None = None


class Downloader:
    """Download targets through the engine link and place them in the store."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        index: Index,
        link: EngineLink,
        resolver: Resolver,
        on_progress: Callable[[list[Progress]], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        self.link = link
        self.resolver = resolver
        self.on_progress = on_progress
        self.on_note = on_note or (lambda _msg: None)
        self.on_outcome = on_outcome
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcache-verify")
        self._live: dict[str, _Live] = {}
        self._waiting: dict[str, tuple[Target, FileLock]] = {}
        self._done: dict[str, Outcome] = {}

    # ------------------------------------------------------------ the loop

    def run(self, targets: list[Target], opts: PullOptions) -> list[Outcome]:
        """Download every target; returns one outcome per target, in order."""
        self.store.prepare()
        try:
            if opts.concurrent is not None:
                for engine in self.link.engines():
                    engine.set_global({"max-concurrent-downloads": str(opts.concurrent)})
            for target in targets:
                self._begin(target, opts)
            if opts.detach:
                for live in list(self._live.values()):
                    self._finish(live, Outcome(live.target, "queued"))
                for ref, (target, lock) in list(self._waiting.items()):
                    lock.release()
                    self._done[ref] = Outcome(target, "queued")
                self._waiting.clear()
            while self._live or self._waiting:
                self._tick(opts)
                self._pause()
        except KeyboardInterrupt:
            self.link.interrupt((lv.engine_url, lv.gid) for lv in self._live.values() if lv.gid)
            raise Interrupted(
                "interrupted; downloads stay resumable: run the same pull again"
            ) from None
        finally:
            self._hasher.shutdown(wait=True)
            for live in self._live.values():
                live.lock.release()
            for _target, lock in self._waiting.values():
                lock.release()
        return [self._done[t.entry.ref] for t in targets]

    def _pause(self) -> None:
        """Wait for the next tick: sooner when a download is about to finish or a hash is done."""
        hashing = [lv.verifying for lv in self._live.values() if lv.verifying is not None]
        if hashing:
            wait(hashing, timeout=POLL, return_when=FIRST_COMPLETED)
            return
        delay = POLL
        for live in self._live.values():
            t = live.last
            if t is not None and t.status == "active" and t.speed > 0 and t.total:
                delay = min(delay, (t.total - t.completed) / t.speed)
        time.sleep(max(0.02, delay))

    def _tick(self, opts: PullOptions) -> None:
        for ref, (target, lock) in list(self._waiting.items()):
            if lock.try_acquire():  # the other process finished or died
                del self._waiting[ref]
                self._begin(target, opts, locked=lock)
        by_engine: dict[str, list[_Live]] = {}
        for live in self._live.values():
            if live.gid and live.verifying is None and live.retry_at is None:
                by_engine.setdefault(live.engine_url, []).append(live)
        for url, lives in by_engine.items():
            try:
                states = self.link.engine(url).tell([lv.gid for lv in lives])
            except EngineError:
                if not self.link.recover():
                    raise
                self.on_note("the aria2 daemon went away; restarted it, resuming")
                continue
            for live in lives:
                self._observe(live, states.get(live.gid), opts)
        now = time.monotonic()
        for live in list(self._live.values()):
            if live.retry_at is not None and now >= live.retry_at:
                live.retry_at = None
                self._start(live, opts)
            if live.verifying is not None and live.verifying.done():
                self._placed(live)
        self._schedule(opts)
        self._report()

    # ------------------------------------------------------------ starting

    def _begin(self, target: Target, opts: PullOptions, locked: FileLock | None = None) -> None:
        ref = target.entry.ref
        lock = locked or FileLock(self.store.lock_path(target.entry.folder, target.entry.filename))
        if locked is None and not lock.try_acquire():
            self.on_note(f"{ref}: another cmcache is downloading it; waiting")
            self._waiting[ref] = (target, lock)
            return
        record = None if opts.force else placed_record(self.index, target)
        if record is not None:  # placed by another process before we got the lock
            lock.release()
            self._done[ref] = Outcome(target, "cached", sha256=record.sha256)
            if self.on_outcome:
                self.on_outcome(self._done[ref])
            return
        live = _Live(target, lock)
        self._live[ref] = live
        job = self.index.job_for(target.entry.folder, target.entry.filename)
        if job is not None and self._adopt(live, job):
            return
        self._start(live, opts)

    def _adopt(self, live: _Live, job: Job) -> bool:
        """Take over a download already in aria2 (an earlier, interrupted or detached pull)."""
        try:
            engine = self.link.engine(job.rpc)
            transfer = engine.tell([job.gid]).get(job.gid)
        except (EngineError, RpcError):
            return False
        if transfer is None or transfer.path != str(live.target.staging):
            return False
        live.gid, live.engine_url, live.last = job.gid, engine.url, transfer
        if transfer.status == "paused":
            with contextlib.suppress(RpcError):
                engine.unpause(job.gid)
        self.on_note(f"{live.target.entry.ref}: resuming an earlier download")
        return True

    def _start(self, live: _Live, opts: PullOptions) -> None:
        target = live.target
        try:
            live.resolved = self.resolver.resolve(target.entry.urls[0])
            self._check_space(target, live.resolved)
            prepare_staging(target)
            engine = self.link.least_busy()
            gid = engine.add(self._uris(target, live.resolved), self._options(target, live, opts))
        except CmcacheError as exc:  # the resolver has already retried what is worth it
            self._fail(live, exc.exit_code, exc.message)
            return
        live.gid, live.engine_url, live.last = gid, engine.url, None
        self.index.add_job(
            Job(
                gid,
                engine.url,
                target.entry.folder,
                target.entry.filename,
                str(target.staging),
                opts.priority,
                self.index.next_seq(),
                self._expected_sha(live),
                self._expected_size(live),
                target.entry.source,
                target.entry.urls[0],
                owner_pid=os.getpid(),
            )
        )

    def _uris(self, target: Target, resolved: Resolved) -> list[str]:
        uris = [resolved.url]
        for mirror in target.entry.urls[1:]:
            try:
                extra = self.resolver.resolve(mirror)
            except DownloadError as exc:
                self.on_note(f"{target.entry.ref}: mirror skipped: {exc.message}")
                continue
            # One header goes to every URI of a download: never mix a token with other hosts.
            if extra.token_host == resolved.token_host:
                uris.append(extra.url)
        return uris

    def _options(self, target: Target, live: _Live, opts: PullOptions) -> dict[str, str]:
        token = live.resolved.token_host if live.resolved else None
        header = self.resolver.token_header(token) if token else None
        return aria2_options(
            target, self.settings.download, opts, self._expected_size(live), header
        )

    def _check_space(self, target: Target, resolved: Resolved) -> None:
        check_space(
            target,
            self._expected_size_of(target, resolved),
            self.store,
            self.settings.cache.min_free,
        )

    # ------------------------------------------------------------ watching

    def _observe(self, live: _Live, transfer: Transfer | None, opts: PullOptions) -> None:
        ref = live.target.entry.ref
        if transfer is None:  # the daemon lost it (restarted without a session): add again
            self._start(live, opts)
            return
        live.last = transfer
        if transfer.status == "complete":
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
            live.verifying = self._hasher.submit(self._hash, live.target.staging)
        elif transfer.status == "removed":
            self._fail(live, ExitCode.DOWNLOAD, f"{ref}: cancelled")
        elif transfer.status == "error":
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
            self._failed_transfer(live, transfer)

    def _failed_transfer(self, live: _Live, transfer: Transfer) -> None:
        code, ref = transfer.error_code, live.target.entry.ref
        message = f"{ref}: aria2 error {code}: {transfer.error_message or 'no message'}"
        if code == "9":
            remove_quietly(live.target.staging, live.target.control)
            self._fail(live, ExitCode.CACHE, f"{ref}: the disk is full; the partial was removed")
            return
        control_empty = live.target.control.exists() and live.target.control.stat().st_size == 0
        if code in CLEAN_RESTART_CODES or control_empty:
            if live.clean_restarts < 1:
                live.clean_restarts += 1
                remove_quietly(live.target.staging, live.target.control)
                self.on_note(f"{ref}: cannot resume (aria2 error {code}); starting over")
                live.retry_at = time.monotonic()
                return
        elif code in RETRY_CODES and self._retry_later(live, message):
            return
        self._fail(live, ExitCode.DOWNLOAD, message)

    def _retry_later(self, live: _Live, message: str) -> bool:
        live.attempts += 1
        if live.attempts >= max(1, self.settings.download.max_tries):
            return False
        wait = min(30.0, max(0.2, self.settings.download.retry_wait * 2 ** (live.attempts - 1)))
        self.on_note(f"{message}; retrying in {wait:.0f}s (attempt {live.attempts + 1})")
        live.retry_at = time.monotonic() + wait
        return True

    # ------------------------------------------------------------ verifying and placing

    @staticmethod
    def _hash(path: Path) -> tuple[str, int]:
        return sha256_file(path), path.stat().st_size

    def _placed(self, live: _Live) -> None:
        assert live.verifying is not None
        target, entry = live.target, live.target.entry
        try:
            sha, size = live.verifying.result()
            want_size, want_sha = self._expected_size(live), self._expected_sha(live)
            if want_size is not None and size != want_size:
                raise IntegrityError(
                    f"{entry.ref}: size mismatch: expected {want_size}, got {size}"
                )
            if want_sha is not None and sha != want_sha:
                raise IntegrityError(
                    f"{entry.ref}: sha256 mismatch: expected {want_sha}, got {sha}"
                )
            target.final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target.staging, target.final)
        except (IntegrityError, OSError) as exc:
            remove_quietly(target.staging, target.control)
            code = exc.exit_code if isinstance(exc, CmcacheError) else ExitCode.CACHE
            text = exc.message if isinstance(exc, CmcacheError) else f"{entry.ref}: {exc}"
            self._fail(live, code, text + "; nothing was placed")
            return
        fp = fingerprint(target.final)
        self.index.record_file(
            FileRecord(
                entry.folder, entry.filename, fp[0], sha, fp[1], fp[2], entry.source, entry.urls[0]
            )
        )
        self.index.record_use(entry.folder, entry.filename)
        self.index.forget_job(entry.folder, entry.filename)
        self._finish(
            live, Outcome(target, "downloaded", size, time.monotonic() - live.started, sha)
        )

    def _expected_sha(self, live: _Live) -> str | None:
        return live.target.entry.sha256 or (live.resolved.sha256 if live.resolved else None)

    def _expected_size(self, live: _Live) -> int | None:
        return self._expected_size_of(live.target, live.resolved)

    @staticmethod
    def _expected_size_of(target: Target, resolved: Resolved | None) -> int | None:
        return target.entry.exact_size or (resolved.size if resolved else None)

    # ------------------------------------------------------------ bookkeeping

    def _fail(self, live: _Live, code: int, message: str) -> None:
        entry = live.target.entry
        if live.gid:
            with contextlib.suppress(EngineError, RpcError):
                engine = self.link.engine(live.engine_url)
                engine.remove(live.gid)
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
        remove_quietly(live.target.staging, live.target.control)
        self.index.forget_job(entry.folder, entry.filename)
        self._finish(
            live,
            Outcome(
                live.target,
                "failed",
                code=int(code),
                message=message,
                seconds=time.monotonic() - live.started,
            ),
        )

    def _finish(self, live: _Live, outcome: Outcome) -> None:
        self._done[live.target.entry.ref] = outcome
        if self.on_outcome:
            self.on_outcome(outcome)
        self._live.pop(live.target.entry.ref, None)
        live.lock.release()

    def _schedule(self, opts: PullOptions) -> None:
        """Keep the highest priorities active (preempting lower ones) on each engine."""
        rebalance(self.index, self.link, opts.concurrent)

    def _report(self) -> None:
        if self.on_progress is None:
            return
        snapshot = []
        for ref, outcome in self._done.items():
            state = "done" if outcome.outcome in ("downloaded", "cached") else "failed"
            snapshot.append(Progress(ref, state, outcome.bytes, outcome.bytes, 0))
        for ref, live in self._live.items():
            t = live.last
            state = (
                "verifying"
                if live.verifying
                else (
                    "downloading" if t and t.status == "active" else (t.status if t else "waiting")
                )
            )
            snapshot.append(
                Progress(
                    ref, state, t.completed if t else 0, t.total if t else 0, t.speed if t else 0
                )
            )
        for ref in self._waiting:
            snapshot.append(Progress(ref, "locked", 0, 0, 0))
        self.on_progress(snapshot)
