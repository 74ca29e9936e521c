"""Run downloads through aria2: lock, resume or start, watch, retry, verify, place atomically.

Rules from aria2's measured behaviour (docs/aria2.md): never ``continue`` a file without its
control file; a 0-byte control file or error 8 means start clean; verify every file ourselves
(services/download/verifying.py); a bad file never reaches its final path.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import FIRST_COMPLETED, wait
from typing import TYPE_CHECKING

from cmcache.adapters.aria2.options import aria2_options, prepare_staging, segments
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
from cmcache.services.cluster.node import hand_over, peer_options, peer_timeout
from cmcache.services.download.in_flight import (
    Live,
    NextStep,
    describe_aria2_error,
    next_poll,
    origin_changed,
)
from cmcache.services.download.placement import Placement, move_verified
from cmcache.services.download.priority import rebalance
from cmcache.services.download.verifying import Verifier

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.adapters.aria2.client import Transfer
    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.adapters.http.resolve import Resolver
    from cmcache.adapters.storage.jobs import Job
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.settings.model import Settings
    from cmcache.services.cluster.node import Cluster

POLL = 0.25


def fetched_elsewhere(archive: Target) -> Outcome:
    """A bundle's archive that another node fetched while this one waited for its turn: not
    here (failed, to whoever would take it for placed), yet no failure of the pull: its members
    are looked for at peers next (``services/pull/run.py``, which asks ``elsewhere``)."""
    why = f"{archive.ref}: another node fetched this bundle's archive"
    code = int(ExitCode.DOWNLOAD)
    return Outcome(archive, PullOutcome.FAILED, code=code, message=why, via="peer")


def elsewhere(outcome: Outcome) -> bool:
    """Whether ``outcome`` is a ``fetched_elsewhere`` one."""
    return outcome.target.bundle_archive and outcome.via == "peer"


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
        cluster: Cluster | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.placement = placement
        self.index = placement.index
        self.link = link
        self.resolver = resolver
        self.hooks = hooks or PullHooks()
        self.cluster = cluster
        self.on_note = self.hooks.on_note
        self._verifier = Verifier(early=link.private is not None)
        self._live: dict[str, Live] = {}
        self._waiting: dict[str, tuple[Target, FileLock]] = {}
        self._done: dict[str, Outcome] = {}
        self.count_use = True  # whether a placed model counts as used (not for prefetch)

    # ------------------------------------------------------------ the loop

    def run(self, targets: list[Target], opts: PullOptions) -> list[Outcome]:
        """Download every target; returns one outcome per target, in order."""
        self.count_use = opts.count_use
        self._verifier = Verifier(early=self.link.private is not None)  # a run may follow a run
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
                    if self.cluster is not None:  # the daemon fetches on: keep the turn
                        token_file = self._token_file(live)
                        self.cluster.detach_lock(live, token_file)
                    self._finish(live, Outcome(live.target, PullOutcome.QUEUED))
                for ref, (target, lock) in list(self._waiting.items()):
                    lock.release()
                    self._done[ref] = Outcome(target, PullOutcome.QUEUED)
                self._waiting.clear()
            while self._live or self._waiting:
                self._tick(opts)
                if not self._fetching() and not opts.detach:
                    self.link.release()  # its stop overlaps the last verification
                if self._live or self._waiting:  # the last tick may have placed the last one
                    self._pause()
        except KeyboardInterrupt:
            fetching = [lv for lv in self._live.values() if lv.gid and lv.verifying is None]
            self.link.interrupt((lv.engine_url, lv.gid) for lv in fetching)
            raise Interrupted(
                "interrupted; downloads stay resumable: run the same pull again"
            ) from None
        except CmcacheError:  # nobody will watch what still runs: keep it resumable, stopped
            self.link.interrupt((lv.engine_url, lv.gid) for lv in self._live.values() if lv.gid)
            raise
        finally:
            self._verifier.shutdown()
            for live in self._live.values():
                live.lock.release()
            for _target, lock in self._waiting.values():
                lock.release()
        return [self._done[t.entry.ref] for t in targets]

    def _fetching(self) -> bool:
        """Whether aria2 still has work here: a download running, retrying or waiting."""
        return bool(self._waiting) or any(lv.verifying is None for lv in self._live.values())

    def _pause(self) -> None:
        """Wait for the next tick: sooner when a download is about to finish or a hash is done."""
        hashing = [lv.verifying for lv in self._live.values() if lv.verifying is not None]
        if hashing:
            wait(hashing, timeout=POLL, return_when=FIRST_COMPLETED)
        else:
            time.sleep(next_poll(self._live.values(), POLL))

    def _tick(self, opts: PullOptions) -> None:
        for ref, (target, lock) in list(self._waiting.items()):
            if lock.try_acquire():  # the other process finished or died
                del self._waiting[ref]
                self._begin(target, opts, locked=lock)
        by_engine: dict[str, list[Live]] = {}
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
        if self.cluster is not None:
            self.cluster.keep_locks(self._live.values())
            for live in self._live.values():
                self._widen(live)
        if self._fetching():
            rebalance(self.index, self.link, opts.concurrent)  # the best priorities run
        self._report()

    def _widen(self, live: Live) -> None:
        """Add peers that began fetching (or placed) the model to a copy from peers."""
        assert self.cluster is not None
        if live.gid and live.verifying is None and live.retry_at is None:
            urls = self.cluster.more_sources(live)
            if urls:
                with contextlib.suppress(EngineError, RpcError):
                    self.link.engine(live.engine_url).add_uris(live.gid, urls)

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
        live = Live(target, lock)
        self._live[ref] = live
        job = self.index.job_for(target.entry.folder, target.entry.filename)
        if job is not None:
            if self._origin_changed(live, job):
                self._discard(live, job)
            elif self._adopt(live, job, opts):
                return
        self._start(live, opts)

    def _origin_changed(self, live: Live, job: Job) -> bool:
        """Whether the origin now serves other bytes than when ``job`` started (its ETag,
        Last-Modified or size changed): resuming would mix two versions into one file."""
        if not live.target.staging.exists():
            return False
        try:
            now = self.resolver.resolve(live.target.entry.urls[0])
        except DownloadError:
            return False  # cannot tell now; _start reports the origin's failure
        live.resolved = now
        return origin_changed(job, now)

    def _discard(self, live: Live, job: Job) -> None:
        """Drop an earlier partial download and its aria2 job: start over."""
        self._drop(job.rpc, job.gid)
        remove_quietly(live.target.staging, live.target.control)
        self.index.forget_job(job.folder, job.filename)
        self.on_note(
            f"{live.target.ref}: the origin changed since the download began; starting over"
        )

    def _adopt(self, live: Live, job: Job, opts: PullOptions) -> bool:
        """Take over a download already in aria2 (an earlier, interrupted or detached pull)."""
        try:
            engine = self.link.engine(job.rpc)
            transfer = engine.tell([job.gid]).get(job.gid)
        except (EngineError, RpcError):
            return False
        if transfer is None or transfer.path != str(live.target.staging):
            return False
        live.follow(job.gid, engine.url, hash_early=self._verifier.early)
        live.last = transfer
        if self.cluster is not None:  # a detached origin fetch: its cluster lock is ours now
            self.cluster.adopt_lock(live, self._token_file(live))
        if transfer.status == TransferStatus.PAUSED:  # an interrupted pull paused it
            with contextlib.suppress(RpcError):
                split = segments(live.target, self.settings.download, opts, job.size)
                engine.change(job.gid, {"split": str(split)})
            with contextlib.suppress(RpcError):
                engine.unpause(job.gid)
        self.on_note(f"{live.target.entry.ref}: resuming an earlier download")
        return True

    def _start(self, live: Live, opts: PullOptions) -> None:
        target = live.target
        try:
            uris = None
            if target.entry.bundle is not None:  # a member alone: from peers, else its archive
                uris = self.cluster.member_source(live) if self.cluster else None
                if uris is None:
                    why = f"{target.ref}: no peer serves it; its bundle's archive brings it"
                    self._fail(live, ExitCode.DOWNLOAD, why)
                    return
            elif self.cluster is not None and not target.archive:
                uris = self.cluster.source_for(live, self.on_note, lambda: self._origin_sha(live))
            elif self.cluster is not None and target.bundle_archive:
                turn = self.cluster.archive_turn(live, self.on_note, wait=not opts.detach)
                if turn is None:
                    self._finish(live, fetched_elsewhere(target))
                if not turn:
                    return  # another node fetches it: wait, or look for its members at peers
            if uris == []:
                return  # another node fetches it, or the origin budget is spent: retry later
            if uris is None:
                if live.resolved is None:
                    live.resolved = self.resolver.resolve(target.entry.urls[0])
                live.check_announced_size()
                uris = self.resolver.with_mirrors(
                    live.resolved, target.entry.urls[1:], self.on_note
                )
            self.store.check_space(target, live.expected_size, self.settings.cache.min_free)
            prepare_staging(target)
            engine = self.link.least_busy()
            gid = engine.add(uris, self._options(target, live, opts))
            live.follow(gid, engine.url, hash_early=self._verifier.early)
            live.last = None
            live.mark = (time.monotonic(), live.mark[1])
            self.index.add_job(live.job(opts.priority, self.index.next_seq()))
            if self.cluster is not None and not target.archive:  # its pieces serve others
                self.cluster.fetching(live)
        except CmcacheError as exc:  # the resolver has already retried what is worth it
            self._fail(live, exc.exit_code, exc.message)

    def _token_file(self, live: Live) -> Path:
        return self.store.fetch_token_path(live.target.entry.folder, live.target.entry.filename)

    def _origin_sha(self, live: Live) -> str | None:
        """The sha256 the origin announces for a model whose manifest has none (asked once per
        pull): the only hash peers may be trusted with then."""
        if not live.origin_asked:
            live.origin_asked = True
            try:
                live.origin_sha = self.resolver.resolve(live.target.entry.urls[0]).sha256
            except DownloadError:
                live.origin_sha = None
        return live.origin_sha

    def _options(self, target: Target, live: Live, opts: PullOptions) -> dict[str, str]:
        token = live.resolved.token_host if live.resolved and live.via == "origin" else None
        header = self.resolver.token_header(token) if token else None
        options = aria2_options(target, self.settings.download, opts, live.expected_size, header)
        if live.via == "peer":  # a peer that stops answering hands over to the origin quickly
            partial = [p for p in live.peers if p.partial]
            parent = len(partial) == 1 == len(live.peers)  # its relay parent alone
            options |= peer_options(
                self.settings.download,
                opts.split,
                bool(partial),
                options["split"] if parent else None,
            )
        return options

    # ------------------------------------------------------------ watching

    def _observe(self, live: Live, transfer: Transfer | None, opts: PullOptions) -> None:
        ref = live.target.entry.ref
        if transfer is None:
            job = self.index.job_for(live.target.entry.folder, live.target.entry.filename)
            if job is None or job.gid != live.gid:  # `cancel` forgot it in another process
                self._fail(live, ExitCode.DOWNLOAD, f"{ref}: cancelled", ended="cancelled")
                return
            self._start(live, opts)  # the daemon lost it (restarted without a session)
            return
        live.last = transfer
        if transfer.status != TransferStatus.ACTIVE:  # waiting or paused is not stalling
            live.mark = (time.monotonic(), transfer.completed)
        elif self._misbehaving(live, transfer):
            return
        self._verifier.feed(live, transfer)
        if transfer.status == TransferStatus.COMPLETE:
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
            self._verifier.start(live)
        elif transfer.status == TransferStatus.REMOVED:
            self._fail(live, ExitCode.DOWNLOAD, f"{ref}: cancelled", ended="cancelled")
        elif transfer.status == TransferStatus.ERROR:
            with contextlib.suppress(EngineError, RpcError):
                self.link.engine(live.engine_url).forget_result(live.gid)
            self._failed_transfer(live, transfer)

    def _misbehaving(self, live: Live, transfer: Transfer) -> bool:
        """Stop a download whose origin sends more than the expected size, or stalls (less
        than ``STALL_RATE`` bytes/s over ``download.timeout`` seconds); True if stopped."""
        peer = live.via == "peer"
        window = peer_timeout(self.settings.download) if peer else self.settings.download.timeout
        verdict = live.check(transfer, window)
        if verdict is None:
            return False
        self._drop(live.engine_url, live.gid)
        if peer and verdict.overshoot:
            self._bad_peer_bytes(live, verdict.message)
        elif peer:
            self._hand_over(live, verdict.message)
        elif verdict.overshoot:
            self._fail(live, ExitCode.INTEGRITY, verdict.message)
        elif not self._retry_later(live, verdict.message):
            self._fail(live, ExitCode.DOWNLOAD, verdict.message + "; giving up")
        return True

    def _drop(self, url: str, gid: str) -> None:
        """Take a download out of aria2; its files stay (to resume or remove). Either step may
        find it gone already, so each is tried on its own."""
        with contextlib.suppress(EngineError, RpcError):
            self.link.engine(url).remove(gid)
        with contextlib.suppress(EngineError, RpcError):
            self.link.engine(url).forget_result(gid)

    def _failed_transfer(self, live: Live, transfer: Transfer) -> None:
        code, ref = transfer.error_code, live.target.ref
        message = f"{ref}: {describe_aria2_error(code, transfer.error_message)}"
        if live.via == "peer" and code != "9":
            self._hand_over(live, message)
            return
        step = live.after_error(code)
        if step == NextStep.DISK_FULL:
            remove_quietly(live.target.staging, live.target.control)
            self._fail(live, ExitCode.CACHE, f"{ref}: the disk is full; the partial was removed")
        elif step == NextStep.START_OVER:
            live.clean_restarts += 1
            remove_quietly(live.target.staging, live.target.control)
            self.on_note(f"{ref}: cannot resume (aria2 error {code}); starting over")
            live.retry_at = time.monotonic()
        elif step != NextStep.RETRY or not self._retry_later(live, message):
            self._fail(live, ExitCode.DOWNLOAD, message)

    def _hand_over(self, live: Live, message: str) -> None:
        """Peers stopped serving ``live``: while it waits for other sources, this node's own
        download is dropped, so it no longer offers its pieces (``_start`` offers them again)."""
        if self.cluster is not None:
            self.cluster.done_fetching(live)
        hand_over(live, message, self.on_note)

    def _bad_peer_bytes(self, live: Live, message: str) -> None:
        assert self.cluster is not None
        remove_quietly(live.target.staging, live.target.control)  # never served from now on
        self.cluster.reject(live, message)

    def _retry_later(self, live: Live, message: str) -> bool:
        live.attempts += 1
        if live.attempts >= max(1, self.settings.download.max_tries):
            return False
        wait = min(30.0, max(0.2, self.settings.download.retry_wait * 2 ** (live.attempts - 1)))
        self.on_note(f"{message}; retrying in {wait:.0f}s (attempt {live.attempts + 1})")
        live.retry_at = time.monotonic() + wait
        return True

    # ------------------------------------------------------------ verifying and placing

    def _placed(self, live: Live) -> None:
        target = live.target
        sha, size = hashed = self._verifier.result(live)
        try:
            if target.archive:  # a bundle's archive: kept for unpacking, never managed
                move_verified(target, hashed, live.expected_size, live.expected_sha)
            else:
                self.placement.commit(
                    target, hashed, live.expected_size, live.expected_sha, target.entry.urls[0]
                )
        except IntegrityError as exc:
            if live.peers and self.cluster is not None:  # peers' bytes: the origin gets a turn
                self._bad_peer_bytes(live, exc.message)
                return
            remove_quietly(target.staging, target.control)
            self._fail(live, exc.exit_code, exc.message + "; nothing was placed")
            return
        except OSError as exc:
            remove_quietly(target.staging, target.control)
            code = exc.exit_code if isinstance(exc, CmcacheError) else ExitCode.CACHE
            text = exc.message if isinstance(exc, IntegrityError) else f"{target.ref}: {exc}"
            self._fail(live, code, text + "; nothing was placed")
            return
        # Placed and recorded: a use time or a job row a full disk cannot write is no failure.
        with contextlib.suppress(CacheError):
            if not target.archive and self.count_use:
                self.index.record_use(target.entry.folder, target.entry.filename)
            self.index.forget_job(target.entry.folder, target.entry.filename, ended="placed")
        if not target.archive and self.cluster is not None:
            self.cluster.announce(target.ref, sha, size)
        seconds = time.monotonic() - live.started
        outcome = Outcome(target, PullOutcome.DOWNLOADED, size, seconds, sha, via=live.via)
        self._finish(live, outcome)

    # ------------------------------------------------------------ bookkeeping

    def _fail(self, live: Live, code: int, message: str, *, ended: str = "failed") -> None:
        """End a download that did not place its file; ``ended`` is what the queue log says
        (a cancelled one is not a failure to whoever shows the queue)."""
        entry = live.target.entry
        if live.gid:
            self._drop(live.engine_url, live.gid)
        remove_quietly(live.target.staging, live.target.control)
        with contextlib.suppress(CacheError):  # a full disk: `status` drops the job later
            self.index.forget_job(entry.folder, entry.filename, ended=ended, reason=message)
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

    def _finish(self, live: Live, outcome: Outcome) -> None:
        if self.cluster is not None:
            self.cluster.done_fetching(live)
        if live.fetch_lock is not None:
            placed = outcome.outcome == PullOutcome.DOWNLOADED
            if live.target.bundle_archive and placed and live.fetch_lock.held:
                assert self.cluster is not None  # only a cluster hands out fetch locks
                self.cluster.keep(live.target.ref, live.fetch_lock)  # until members announced
            else:
                live.fetch_lock.release()
        if live.token_file is not None and outcome.outcome != PullOutcome.QUEUED:
            remove_quietly(live.token_file)  # placed or failed: no lock left to keep
        self._done[live.target.entry.ref] = outcome
        # A bundle's archive is reported by its members once unpacked; a member peers did not
        # deliver is not reported here: its archive follows (services/pull/bundles.py).
        member_missed = live.target.entry.bundle is not None and not outcome.outcome.ok
        if not live.target.archive and not member_missed:
            self.hooks.on_outcome(outcome)
        self._live.pop(live.target.entry.ref, None)
        live.lock.release()

    def _report(self) -> None:
        ended = {True: ProgressState.DONE, False: ProgressState.FAILED}
        snapshot = [  # not over: a member peers did not deliver (its archive follows), an
            # archive another node fetched (its members follow)
            Progress(r, ended[o.outcome.ok], o.bytes, o.bytes, 0)
            for r, o in self._done.items()
            if o.outcome.ok or (o.target.entry.bundle is None and not elsewhere(o))
        ]
        snapshot += [live.progress() for live in self._live.values()]
        snapshot += [Progress(ref, ProgressState.LOCKED, 0, 0, 0) for ref in self._waiting]
        self.hooks.on_progress(snapshot)
