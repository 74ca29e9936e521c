"""Run downloads through aria2: lock, resume or start, watch, retry, verify, place atomically.

Rules from aria2's measured behaviour (docs/aria2.md): never ``continue`` a file without its
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

from cmcache.adapters.aria2.options import aria2_options, prepare_staging
from cmcache.adapters.storage.index import Job
from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import (
    CacheError,
    CmcacheError,
    DownloadError,
    EngineError,
    ExitCode,
    IntegrityError,
    Interrupted,
    RpcError,
)
from cmcache.core.files import remove_quietly
from cmcache.core.states import ProgressState, PullOutcome, TransferStatus
from cmcache.core.targets import Outcome, Progress, PullHooks, PullOptions, Target
from cmcache.core.urls import redact
from cmcache.services.placement import Placement, hash_file
from cmcache.services.priority import rebalance

if TYPE_CHECKING:
    from cmcache.adapters.aria2.client import Transfer
    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.adapters.http.resolve import Resolved, Resolver
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.settings.model import Settings

POLL = 0.25
RETRY_CODES = {"1", "2", "5", "6", "19", "22", "24", "29"}  # transient: resume after a pause
CLEAN_RESTART_CODES = {"8", "13"}  # resume impossible or a stale file in the way
STALL_RATE = 1024  # bytes/s below which a download counts as stalled


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
    mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))  # progress
    verifying: Future[tuple[str, int]] | None = None


class Downloader:
    """Download targets through the engine link and place them in the store."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        placement: Placement,
        link: EngineLink,
        resolver: Resolver,
        hooks: PullHooks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.placement = placement
        self.index = placement.index
        self.link = link
        self.resolver = resolver
        self.hooks = hooks or PullHooks()
        self.on_note = self.hooks.on_note
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcache-verify")
        self._live: dict[str, _Live] = {}
        self._waiting: dict[str, tuple[Target, FileLock]] = {}
        self._done: dict[str, Outcome] = {}

    # ------------------------------------------------------------ the loop

    def run(self, targets: list[Target], opts: PullOptions) -> list[Outcome]:
        """Download every target; returns one outcome per target, in order."""
        self.store.prepare()
        self.link.warm_up()
        try:
            if opts.concurrent is not None:
                for engine in self.link.engines():
                    engine.set_global({"max-concurrent-downloads": str(opts.concurrent)})
            for target in targets:
                self._begin(target, opts)
            if opts.detach:
                for live in list(self._live.values()):
                    self._finish(live, Outcome(live.target, PullOutcome.QUEUED))
                for ref, (target, lock) in list(self._waiting.items()):
                    lock.release()
                    self._done[ref] = Outcome(target, PullOutcome.QUEUED)
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
            if t is not None and t.status == TransferStatus.ACTIVE and t.speed > 0 and t.total:
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
                live.resolved = None  # resolve again: signed redirect URLs expire
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
        record = None if opts.force else self.placement.placed_record(target)
        if record is not None:  # placed by another process before we got the lock
            lock.release()
            self._done[ref] = Outcome(target, PullOutcome.CACHED, sha256=record.sha256)
            self.hooks.on_outcome(self._done[ref])
            return
        live = _Live(target, lock)
        self._live[ref] = live
        job = self.index.job_for(target.entry.folder, target.entry.filename)
        if job is not None:
            if self._origin_changed(live, job):
                self._discard(live, job)
            elif self._adopt(live, job):
                return
        self._start(live, opts)

    def _origin_changed(self, live: _Live, job: Job) -> bool:
        """Whether the origin now serves other bytes than when ``job`` started (its ETag,
        Last-Modified or size changed): resuming would mix two versions into one file."""
        if not live.target.staging.exists():
            return False
        try:
            now = self.resolver.resolve(live.target.entry.urls[0])
        except DownloadError:
            return False  # cannot tell now; _start reports the origin's failure
        live.resolved = now
        etag, modified = now.validators
        changed = (
            (job.etag and etag and job.etag != etag)
            or (job.last_modified and modified and job.last_modified != modified)
            or (job.size is not None and now.size is not None and job.size != now.size)
        )
        return bool(changed)

    def _discard(self, live: _Live, job: Job) -> None:
        """Drop an earlier partial download and its aria2 job: start over."""
        with contextlib.suppress(EngineError, RpcError):
            engine = self.link.engine(job.rpc)
            engine.remove(job.gid)
            engine.forget_result(job.gid)
        remove_quietly(live.target.staging, live.target.control)
        self.index.forget_job(job.folder, job.filename)
        self.on_note(
            f"{live.target.ref}: the origin changed since the download began; starting over"
        )

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
        if transfer.status == TransferStatus.PAUSED:
            with contextlib.suppress(RpcError):
                engine.unpause(job.gid)
        self.on_note(f"{live.target.entry.ref}: resuming an earlier download")
        return True

    def _start(self, live: _Live, opts: PullOptions) -> None:
        target = live.target
        try:
            if live.resolved is None:
                live.resolved = self.resolver.resolve(target.entry.urls[0])
            self._check_announced_size(live)
            self.store.check_space(target, self._expected_size(live), self.settings.cache.min_free)
            prepare_staging(target)
            engine = self.link.least_busy()
            gid = engine.add(self._uris(target, live.resolved), self._options(target, live, opts))
            live.gid, live.engine_url, live.last = gid, engine.url, None
            live.mark = (time.monotonic(), live.mark[1])
            self._record_job(live, opts)
        except CmcacheError as exc:  # the resolver has already retried what is worth it
            self._fail(live, exc.exit_code, exc.message)

    def _record_job(self, live: _Live, opts: PullOptions) -> None:
        target = live.target
        assert live.resolved is not None
        self.index.add_job(
            Job(
                live.gid,
                live.engine_url,
                target.entry.folder,
                target.entry.filename,
                str(target.staging),
                opts.priority,
                self.index.next_seq(),
                self._expected_sha(live),
                self._expected_size(live),
                target.entry.source,
                redact(target.entry.urls[0]),
                owner_pid=os.getpid(),
                etag=live.resolved.validators[0],
                last_modified=live.resolved.validators[1],
            )
        )

    @staticmethod
    def _check_announced_size(live: _Live) -> None:
        """Refuse an origin that announces more (or fewer) bytes than the manifest states.

        Raises:
            IntegrityError: the sizes differ.
        """
        want, announced = live.target.entry.exact_size, live.resolved and live.resolved.size
        if want is not None and announced and announced != want:
            raise IntegrityError(
                f"{live.target.ref}: size mismatch: the origin serves {announced} bytes, "
                f"the manifest says {want}",
                ref=live.target.ref,
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

    # ------------------------------------------------------------ watching

    def _observe(self, live: _Live, transfer: Transfer | None, opts: PullOptions) -> None:
        ref = live.target.entry.ref
        if transfer is None:
            job = self.index.job_for(live.target.entry.folder, live.target.entry.filename)
            if job is None or job.gid != live.gid:  # `cancel` forgot it in another process
                self._fail(live, ExitCode.DOWNLOAD, f"{ref}: cancelled")
                return
            self._start(live, opts)  # the daemon lost it (restarted without a session)
            return
        live.last = transfer
        if transfer.status != TransferStatus.ACTIVE:  # waiting or paused is not stalling
            live.mark = (time.monotonic(), transfer.completed)
        elif self._misbehaving(live, transfer):
            return
        if transfer.status == TransferStatus.COMPLETE:
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
            live.verifying = self._hasher.submit(hash_file, live.target.staging)
        elif transfer.status == TransferStatus.REMOVED:
            self._fail(live, ExitCode.DOWNLOAD, f"{ref}: cancelled")
        elif transfer.status == TransferStatus.ERROR:
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
            self._failed_transfer(live, transfer)

    def _misbehaving(self, live: _Live, transfer: Transfer) -> bool:
        """Stop a download whose origin sends more than the expected size, or stalls (less
        than ``STALL_RATE`` bytes/s over ``download.timeout`` seconds); True if stopped."""
        ref, want = live.target.ref, self._expected_size(live)
        if want is not None and transfer.completed > want:
            self._stop_transfer(live)
            message = f"{ref}: the origin sent more than the {want} bytes expected; stopped"
            self._fail(live, ExitCode.INTEGRITY, message)
            return True
        now = time.monotonic()
        mark_at, mark_bytes = live.mark
        if transfer.completed - mark_bytes >= STALL_RATE * self.settings.download.timeout:
            live.mark = (now, transfer.completed)
            return False
        if now - mark_at < self.settings.download.timeout:
            return False
        self._stop_transfer(live)
        got = transfer.completed - mark_bytes
        message = f"{ref}: stalled: {got} bytes in the last {now - mark_at:.0f}s"
        live.mark = (now, transfer.completed)
        if not self._retry_later(live, message):
            self._fail(live, ExitCode.DOWNLOAD, message + "; giving up")
        return True

    def _stop_transfer(self, live: _Live) -> None:
        """Take a download out of aria2, keeping its partial file (to resume or remove)."""
        with contextlib.suppress(EngineError, RpcError):
            engine = self.link.engine(live.engine_url)
            engine.remove(live.gid)
            engine.forget_result(live.gid)

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

    def _placed(self, live: _Live) -> None:
        assert live.verifying is not None
        target = live.target
        try:
            record = self.placement.commit(
                target,
                live.verifying.result(),
                self._expected_size(live),
                self._expected_sha(live),
                target.entry.urls[0],
            )
        except (IntegrityError, OSError) as exc:
            remove_quietly(target.staging, target.control)
            code = exc.exit_code if isinstance(exc, CmcacheError) else ExitCode.CACHE
            text = exc.message if isinstance(exc, CmcacheError) else f"{target.ref}: {exc}"
            self._fail(live, code, text + "; nothing was placed")
            return
        self.index.record_use(target.entry.folder, target.entry.filename)
        self.index.forget_job(target.entry.folder, target.entry.filename)
        outcome = Outcome(
            target,
            PullOutcome.DOWNLOADED,
            record.size,
            time.monotonic() - live.started,
            record.sha256,
        )
        self._finish(live, outcome)

    def _expected_sha(self, live: _Live) -> str | None:
        return live.target.entry.sha256 or (live.resolved.sha256 if live.resolved else None)

    @staticmethod
    def _expected_size(live: _Live) -> int | None:
        return live.target.entry.exact_size or (live.resolved.size if live.resolved else None)

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
        with contextlib.suppress(CacheError):  # a full disk: `status` drops the job later
            self.index.forget_job(entry.folder, entry.filename)
        self._finish(
            live,
            Outcome(
                live.target,
                PullOutcome.FAILED,
                code=int(code),
                message=message,
                seconds=time.monotonic() - live.started,
            ),
        )

    def _finish(self, live: _Live, outcome: Outcome) -> None:
        self._done[live.target.entry.ref] = outcome
        self.hooks.on_outcome(outcome)
        self._live.pop(live.target.entry.ref, None)
        live.lock.release()

    def _schedule(self, opts: PullOptions) -> None:
        """Keep the highest priorities active (preempting lower ones) on each engine."""
        rebalance(self.index, self.link, opts.concurrent)

    def _report(self) -> None:
        snapshot = []
        for ref, outcome in self._done.items():
            state = ProgressState.DONE if outcome.outcome.ok else ProgressState.FAILED
            snapshot.append(Progress(ref, state, outcome.bytes, outcome.bytes, 0))
        for ref, live in self._live.items():
            t = live.last
            if live.verifying:
                state = ProgressState.VERIFYING
            elif t is None:
                state = ProgressState.WAITING
            elif t.status == TransferStatus.ACTIVE:
                state = ProgressState.DOWNLOADING
            elif t.status == TransferStatus.PAUSED:
                state = ProgressState.PAUSED
            else:
                state = ProgressState.WAITING
            done, total, speed = (t.completed, t.total, t.speed) if t else (0, 0, 0)
            snapshot.append(Progress(ref, state, done, total, speed))
        for ref in self._waiting:
            snapshot.append(Progress(ref, ProgressState.LOCKED, 0, 0, 0))
        self.hooks.on_progress(snapshot)
