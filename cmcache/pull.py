"""The pull service: refs → targets, skip what is present and verified, download the rest."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from cmcache.cache.index import FileRecord
from cmcache.cache.verify import fingerprint, sha256_file
from cmcache.errors import IntegrityError, RefError, UsageError
from cmcache.manifest import Entry, url_problem
from cmcache.results import Outcome, PullOptions, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cmcache.cache.index import Index
    from cmcache.cache.store import ModelStore
    from cmcache.catalog import Catalog
    from cmcache.download import Downloader


def read_ref_lines(lines: Iterable[str]) -> list[str]:
    """Refs from a file: one per line, ``#`` starts a comment, blank lines skipped."""
    refs = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # A trailing comment needs a blank before '#': URLs may contain '#'.
        text = text.split(" #", 1)[0].split("\t#", 1)[0].strip()
        refs.append(text)
    return refs


def is_url(ref: str) -> bool:
    """Whether a ref is an ad-hoc URL rather than a catalog name."""
    return urlsplit(ref).scheme.lower() in ("http", "https")


def resolve_targets(
    catalog: Catalog, store: ModelStore, refs: list[str], folder: str | None = None
) -> list[Target]:
    """Turn refs into targets; every unknown ref is reported at once, before any download.

    Raises:
        RefError: unknown or ambiguous refs.
        UsageError: a URL without ``--folder``.
    """
    entries: list[Entry] = []
    problems: list[RefError] = []
    for ref in refs:
        if is_url(ref):
            entries.append(_adhoc(ref, folder))
            continue
        try:
            entries.append(catalog.resolve(ref))
        except RefError as exc:
            problems.append(exc)
    if problems:
        if len(problems) == 1:
            raise problems[0]
        raise RefError(
            "; ".join(p.message for p in problems),
            ref=problems[0].ref,
            candidates=tuple(c for p in problems for c in p.candidates),
        )
    unique = {e.ref: e for e in entries}
    return [
        Target(e, store.final_path(e.folder, e.filename), store.staging_path(e.folder, e.filename))
        for e in unique.values()
    ]


def _adhoc(url: str, folder: str | None) -> Entry:
    if not folder:
        raise UsageError(f"a URL needs --folder to say where it goes: {url}")
    problem = url_problem(url)
    if problem:
        raise UsageError(problem)
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name:
        raise UsageError(f"cannot tell a file name from {url}")
    return Entry(folder=folder, filename=name, urls=(url,), source="url")


def _unchanged(record: FileRecord, target: Target) -> bool:
    """Size, mtime and inode as when the file was verified: no need to hash it again."""
    try:
        return (record.size, record.mtime_ns, record.inode) == fingerprint(target.final)
    except OSError:
        return False


def placed_record(index: Index, target: Target) -> FileRecord | None:
    """The record of a managed file in place and unchanged since verified (no hashing)."""
    entry = target.entry
    record = index.get_file(entry.folder, entry.filename)
    if record is None or (entry.sha256 is not None and record.sha256 != entry.sha256):
        return None
    return record if _unchanged(record, target) else None


def present(index: Index, target: Target, *, force: bool) -> str | None:
    """The sha256 of a target already present and verified, else None (it must be fetched).

    A managed file is trusted while its size, mtime and inode match the index (no re-hash).
    A file cmcache did not place is hashed once and adopted when it matches.

    Raises:
        IntegrityError: an unmanaged file is in the way and differs (``--force`` replaces it).
    """
    if force or not target.final.is_file():
        return None
    entry = target.entry
    record = index.get_file(entry.folder, entry.filename)
    if record is not None and _unchanged(record, target):
        if entry.sha256 is None or record.sha256 == entry.sha256:
            return record.sha256 or ""
        return None  # the manifest now names other bytes: fetch them
    fp = fingerprint(target.final)
    if entry.exact_size is not None and fp[0] != entry.exact_size and record is None:
        raise IntegrityError(
            f"{entry.ref}: {target.final} exists with {fp[0]} bytes, the manifest says "
            f"{entry.exact_size}",
            hint="use --force to replace it",
            ref=entry.ref,
        )
    sha = sha256_file(target.final)
    if entry.sha256 is not None and sha != entry.sha256:
        if record is not None:
            return None
        raise IntegrityError(
            f"{entry.ref}: {target.final} exists but its sha256 differs",
            hint="use --force to replace it",
            ref=entry.ref,
        )
    index.record_file(
        FileRecord(
            entry.folder, entry.filename, fp[0], sha, fp[1], fp[2], entry.source, entry.urls[0]
        )
    )
    return sha


@dataclass(frozen=True)
class PullReport:
    """Every target's outcome."""

    outcomes: tuple[Outcome, ...]

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Targets that did not end present and verified."""
        return tuple(o for o in self.outcomes if o.outcome == "failed")


def pull(
    targets: list[Target],
    *,
    index: Index,
    make_downloader: Callable[[], Downloader],
    opts: PullOptions,
    force: bool = False,
    dry_run: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> PullReport:
    """Skip present targets (no network, no daemon); download the rest."""
    outcomes: dict[str, Outcome] = {}
    missing: list[Target] = []
    for target in targets:
        try:
            sha = present(index, target, force=force)
        except IntegrityError as exc:
            outcomes[target.entry.ref] = Outcome(
                target, "failed", code=int(exc.exit_code), message=exc.message
            )
            continue
        if sha is not None:
            index.record_use(target.entry.folder, target.entry.filename)
            outcomes[target.entry.ref] = Outcome(target, "cached", sha256=sha)
            if on_outcome:
                on_outcome(outcomes[target.entry.ref])
        else:
            missing.append(target)
    if dry_run:
        for target in missing:
            outcomes[target.entry.ref] = Outcome(target, "planned")
    elif missing:
        for outcome in make_downloader().run(missing, replace(opts, force=force)):
            outcomes[outcome.target.entry.ref] = outcome
    return PullReport(tuple(outcomes[t.entry.ref] for t in targets))
