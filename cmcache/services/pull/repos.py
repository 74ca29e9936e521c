"""Whole Hugging Face repositories, pulled, placed and managed as one model.

The tree API lists the files; each is downloaded and verified on its own (LFS files by their
sha256, small git files by their exact size) into a staging folder beside the others; when every
file is there the folder replaces ``<folder>/<REPO>`` in one rename, and the index records the
repository as one managed file whose size is the sum and whose sha256 is a digest of its files'.
Files verified by an earlier, interrupted pull (or unchanged in the copy being replaced) are not
fetched again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.adapters.storage.locks import FileLock
from cmcache.core.errors import CmcacheError, ExitCode, ManifestError, UsageError
from cmcache.core.hubs import repo_digest
from cmcache.core.manifest.entry import Entry
from cmcache.core.manifest.safety import location_problem
from cmcache.core.sourcerefs import Endpoints, HfFile, HfRepo, hf_resolve_url, parse_source_ref
from cmcache.core.states import PullOutcome
from cmcache.core.targets import Outcome, Target
from cmcache.services.download.placement import hash_file, mismatch

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.hubs import HfTreeFile
    from cmcache.services.download.placement import Placement
    from cmcache.services.sources.refs import Sources

# The source of one file of a repository: staged for the repository, never placed on its own.
REPO_FILE = "repo-file"


def hf_repo_of(entry: Entry) -> HfRepo | None:
    """The repository an entry names as a whole (``hf:OWNER/REPO[@REV]``), if it does."""
    url = entry.urls[0] if entry.urls else ""
    if not url.lower().startswith("hf:"):
        return None
    try:
        ref = parse_source_ref(url, Endpoints())
    except UsageError:
        return None
    return ref if isinstance(ref, HfRepo) else None


@dataclass
class RepoPull:
    """One repository being pulled: its files, those already verified, its lock."""

    target: Target
    files: list[Target]
    ready: dict[str, str] = field(default_factory=dict)  # path in the repository → sha256
    outcomes: list[Outcome] = field(default_factory=list)
    lock: FileLock | None = None
    started: float = field(default_factory=time.monotonic)

    def path_of(self, member: Target) -> str:
        """A file's path inside the repository."""
        return member.final.relative_to(self.target.staging).as_posix()


class Repositories:
    """Plan, then assemble, the repositories of one pull."""

    def __init__(
        self, store: ModelStore, placement: Placement, sources: Sources, *, force: bool
    ) -> None:
        self.store = store
        self.placement = placement
        self.sources = sources
        self.force = force
        self.pulls: dict[str, RepoPull] = {}  # by the repository's ref
        self._owner: dict[str, str] = {}  # a file's ref → its repository's ref

    def plan(self, targets: list[Target], fail: Callable[[Outcome], None]) -> list[Target]:
        """List each repository (the tree API) and return the files still to download."""
        wanted: list[Target] = []
        for target in targets:
            try:
                pulled = self._plan_one(target)
            except CmcacheError as exc:
                fail(_failed(target, exc.exit_code, exc.message))
                continue
            if pulled is None:  # placed by another cmcache meanwhile
                fail(Outcome(target, PullOutcome.CACHED, sha256=self._recorded(target)))
                continue
            self.pulls[target.ref] = pulled
            for member in pulled.files:
                self._owner[member.ref] = target.ref
                if pulled.path_of(member) not in pulled.ready:
                    wanted.append(member)
        return wanted

    def _recorded(self, target: Target) -> str | None:
        record = self.placement.placed_record(target)
        return record.sha256 if record else None

    def _plan_one(self, target: Target) -> RepoPull | None:
        repo = hf_repo_of(target.entry)
        assert repo is not None
        lock = FileLock(self.store.lock_path(target.entry.folder, target.entry.filename))
        if not lock.try_acquire():
            self.sources.on_note(f"{target.ref}: another cmcache is pulling it; waiting")
            lock.acquire()
        try:
            if not self.force and self.placement.placed_record(target) is not None:
                lock.release()
                return None
            files = self.sources.hub().tree(repo)
            if not files:
                raise ManifestError(f"{target.ref}: hf:{repo.repo} has no files")
            members = [self._member(target, repo, f) for f in files]
            pulled = RepoPull(target, members, lock=lock)
            self._reuse(pulled, files)
        except BaseException:
            lock.release()
            raise
        return pulled

    def _member(self, target: Target, repo: HfRepo, file: HfTreeFile) -> Target:
        entry = target.entry
        filename = f"{entry.filename}/{file.path}"
        problem = location_problem(entry.folder, filename)
        if problem:  # a name from the network: the whole repository is refused
            raise ManifestError(f"{target.ref}: refusing hf:{repo.repo}: {problem}")
        url = hf_resolve_url(self.sources.endpoints.hf, HfFile(repo.repo, file.path, repo.revision))
        member = Entry(entry.folder, filename, (url,), file.sha256, file.size, source=REPO_FILE)
        staging = self.store.staging_path(entry.folder, filename)
        return Target(member, target.staging / file.path, staging, archive=True)

    def _reuse(self, pulled: RepoPull, files: list[HfTreeFile]) -> None:
        """Keep files an interrupted pull verified, and link unchanged ones of the copy in place."""
        if self.force:
            shutil.rmtree(pulled.target.staging, ignore_errors=True)
            return
        if pulled.target.staging.exists() and not pulled.target.staging.is_dir():
            pulled.target.staging.unlink()
        old = pulled.target.final
        for member, file in zip(pulled.files, files, strict=True):
            path = pulled.path_of(member)
            for candidate in (member.final, old / path):
                sha = _verified(candidate, file.size, file.sha256)
                if sha is None:
                    continue
                if candidate != member.final:
                    member.final.parent.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(FileNotFoundError):
                        member.final.unlink()
                    os.link(candidate, member.final)
                pulled.ready[path] = sha
                break

    def owns(self, member: Target) -> bool:
        """Whether a downloaded target is a file of a repository of this pull."""
        return member.ref in self._owner

    def collect(self, outcome: Outcome) -> None:
        """Keep a file's outcome for its repository."""
        self.pulls[self._owner[outcome.target.ref]].outcomes.append(outcome)

    def finish(self, on_outcome: Callable[[Outcome], None] | None) -> list[Outcome]:
        """Place every repository whose files all arrived; report each repository once."""
        done = []
        for pulled in self.pulls.values():
            try:
                outcome = self._assemble(pulled)
            finally:
                if pulled.lock is not None:
                    pulled.lock.release()
            if on_outcome:
                on_outcome(outcome)
            done.append(outcome)
        return done

    def _assemble(self, pulled: RepoPull) -> Outcome:
        target = pulled.target
        seconds = time.monotonic() - pulled.started
        failed = [o for o in pulled.outcomes if o.outcome == PullOutcome.FAILED]
        if failed:
            code = max((o.code for o in failed), key=_severity)
            first = failed[0].message
            message = f"{target.ref}: {len(failed)} of {len(pulled.files)} files failed ({first})"
            return _failed(target, code, message + "; the verified ones are kept for a retry")
        if any(o.outcome == PullOutcome.QUEUED for o in pulled.outcomes):
            return Outcome(target, PullOutcome.QUEUED)
        shas = dict(pulled.ready)
        for o in pulled.outcomes:
            shas[pulled.path_of(o.target)] = o.sha256 or ""
        try:
            self._place(pulled)
        except OSError as exc:
            return _failed(target, ExitCode.CACHE, f"{target.ref}: cannot place it: {exc}")
        digest = repo_digest(shas.items())
        entry = target.entry
        record = self.placement.record(
            entry.folder, entry.filename, target.final, digest, entry.source, entry.urls[0]
        )
        self.placement.index.record_use(entry.folder, entry.filename)
        got = sum(o.bytes for o in pulled.outcomes)
        return Outcome(target, PullOutcome.DOWNLOADED, got or record.size, seconds, digest)

    def _place(self, pulled: RepoPull) -> None:
        """Swap the staged folder in; an older copy is moved aside first, then removed."""
        final, staged = pulled.target.final, pulled.target.staging
        extra = _unlisted(staged, {pulled.path_of(m) for m in pulled.files})
        for path in extra:  # left by an older revision's interrupted pull
            path.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        aside = staged.with_name(staged.name + ".old")
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(staged, final)
        shutil.rmtree(aside, ignore_errors=True)


def _unlisted(base: Path, listed: set[str]) -> list[Path]:
    files = (p for p in base.rglob("*") if p.is_file())
    return [p for p in files if p.relative_to(base).as_posix() not in listed]


def _verified(candidate: Path, size: int, sha: str | None) -> str | None:
    """The sha256 of a file that is the expected one (exact size, and sha256 when known)."""
    try:
        if not candidate.is_file() or candidate.stat().st_size != size:
            return None
        actual, got = hash_file(candidate)
    except OSError:
        return None
    return actual if mismatch(size, sha, got, actual) is None else None


def _severity(code: int) -> int:
    return {int(ExitCode.CACHE): 3, int(ExitCode.INTEGRITY): 2}.get(code, 1)


def _failed(target: Target, code: int, message: str) -> Outcome:
    return Outcome(target, PullOutcome.FAILED, code=int(code), message=message)
