"""Sync sources: fetch indexes and lists, download only what changed, replace atomically."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from cmcache.adapters.http.fetch import Fetched, Fetcher, to_url
from cmcache.adapters.storage.manifest_store import ListRecord, ManifestStore
from cmcache.core.errors import ManifestError, UsageError
from cmcache.core.manifest.formats import ParsedList, parse_manifest
from cmcache.core.names import MD5_RE, is_plain_name
from cmcache.core.states import ListStatus
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.core.settings.model import Settings, Source

INDEX_ROW = "(index)"


@dataclass(frozen=True)
class ListReport:
    """The outcome for one list: unchanged, updated, added, removed or failed."""

    source: str
    list: str
    status: ListStatus
    old_version: str = ""
    new_version: str = ""
    entries: int = 0
    message: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyncReport:
    """Every list's outcome; ``check`` means nothing was written."""

    lists: tuple[ListReport, ...]
    check: bool

    @property
    def failed(self) -> tuple[ListReport, ...]:
        """Lists that could not be synced."""
        return tuple(r for r in self.lists if r.status == ListStatus.FAILED)

    @property
    def changed(self) -> bool:
        """Whether anything was (or, with --check, would be) changed."""
        return any(r.status.changes for r in self.lists)


Progress = Callable[[ListReport], None]


@dataclass
class _Job:
    settings: Settings
    store: ManifestStore
    fetcher: Fetcher
    force: bool
    check: bool
    strict: bool
    base_dir: Path


def sync_sources(
    settings: Settings,
    names: Sequence[str] = (),
    *,
    fetcher: Fetcher | None = None,
    force: bool = False,
    check: bool = False,
    strict: bool = False,
    on_list: Progress | None = None,
) -> SyncReport:
    """Sync the named sources (all when none are named) and report per list."""
    known = {s.name: s for s in settings.sources}
    unknown = [n for n in names if n not in known]
    if unknown:
        choices = ", ".join(known) or "none configured"
        raise UsageError(f"unknown source {unknown[0]!r}", hint=f"sources: {choices}")
    store = ManifestStore(settings.paths.manifests_dir)
    fetcher = fetcher or Fetcher(settings.token_for)
    job = _Job(settings, store, fetcher, force, check, strict, settings.paths.config_file.parent)
    reports: list[ListReport] = []

    def emit(report: ListReport) -> None:
        reports.append(report)
        if on_list:
            on_list(report)

    for source in [known[n] for n in names] if names else settings.sources:
        if source.index is not None:
            _sync_index(job, source, emit)
        else:
            _sync_url(job, source, emit)
    if not names:  # sources removed from the config leave nothing behind
        for stale in set(store.sources()) - set(known):
            for name, rec in store.records(stale).items():
                emit(ListReport(stale, name, ListStatus.REMOVED, rec.version, "", 0))
            if not check:
                store.drop_source(stale)
    report = SyncReport(tuple(reports), check)
    if not check:
        store.record_sync(ok=not report.failed)
    return report


def _sync_index(job: _Job, source: Source, emit: Progress) -> None:
    assert source.index is not None
    try:
        index_url = to_url(source.index, job.base_dir)
        index = _parse_index(job.fetcher.get(index_url), source.name)
    except ManifestError as exc:
        emit(ListReport(source.name, INDEX_ROW, ListStatus.FAILED, message=exc.message))
        return
    existing = job.store.records(source.name)
    for name, spec in index.items():
        emit(_sync_listed(job, source, name, spec, existing.get(name), index_url))
    for name, old in existing.items():
        if name not in index:
            if not job.check:
                job.store.drop(source.name, name)
            emit(ListReport(source.name, name, ListStatus.REMOVED, old.version, "", 0))


def _sync_listed(
    job: _Job,
    source: Source,
    name: str,
    spec: dict[str, str],
    old: ListRecord | None,
    index_url: str,
) -> ListReport:
    old_version = old.version if old else ""
    new_version = spec.get("version", "")
    row = ListReport(source.name, name, ListStatus.FAILED, old_version, new_version)
    if job.store.local_md5(source.name, name) == spec["md5"] and old and not job.force:
        if old.version != new_version and not job.check:
            job.store.save(source.name, replace(old, version=new_version), None)
        return replace(
            row, status=ListStatus.UNCHANGED, old_version=old_version, entries=old.entries
        )
    status = ListStatus.UPDATED if old else ListStatus.ADDED
    if job.check:
        return replace(row, status=status)
    url = urljoin(index_url, spec["url"])
    index_scheme = urlsplit(index_url).scheme
    if index_scheme != "file" and urlsplit(url).scheme != index_scheme:
        # A remote index may name only lists of its own scheme: never file:// or a downgrade.
        message = f"the index points list {name!r} at {redact(url)}; only {index_scheme} URLs"
        return replace(row, message=message + " (or relative ones) are followed")
    try:
        fetched = job.fetcher.get(url)
        if fetched.md5 != spec["md5"]:
            raise ManifestError(
                f"MD5 mismatch for {redact(url)}: the index says {spec['md5']}, got {fetched.md5}; "
                "kept the previous copy"
            )
        parsed = _parse(job, source, name, fetched)
    except ManifestError as exc:
        return replace(row, message=exc.message)
    record = ListRecord(
        name, fetched.md5, new_version or parsed.version, parsed.format, url, len(parsed.entries)
    )
    job.store.save(source.name, record, fetched.body, parsed.entries)
    if old and old.md5 == fetched.md5:
        status = ListStatus.UNCHANGED
    return replace(
        row,
        status=status,
        new_version=record.version,
        entries=record.entries,
        warnings=parsed.warnings,
    )


def _sync_url(job: _Job, source: Source, emit: Progress) -> None:
    assert source.url is not None
    name = source.name
    old = job.store.records(name).get(name)
    old_version = old.version if old else ""
    row = ListReport(name, name, ListStatus.FAILED, old_version)
    have_copy = job.store.local_md5(name, name) is not None and old is not None
    try:
        url = to_url(source.url, job.base_dir)
        conditional = old if have_copy and not job.force else None
        fetched = job.fetcher.get(
            url,
            etag=conditional.etag if conditional else "",
            last_modified=conditional.last_modified if conditional else "",
        )
        if fetched.body is None or (have_copy and old and old.md5 == fetched.md5 and not job.force):
            emit(
                replace(
                    row,
                    status=ListStatus.UNCHANGED,
                    new_version=old_version,
                    entries=old.entries if old else 0,
                )
            )
            return
        parsed = _parse(job, source, name, fetched)
    except ManifestError as exc:
        emit(replace(row, message=exc.message))
        return
    version = parsed.version or fetched.md5[:8]
    status = ListStatus.UPDATED if old else ListStatus.ADDED
    if old and old.md5 == fetched.md5:
        status = ListStatus.UNCHANGED
    if not job.check:
        record = ListRecord(
            name,
            fetched.md5,
            version,
            parsed.format,
            url,
            len(parsed.entries),
            etag=fetched.headers.get("ETag", ""),
            last_modified=fetched.headers.get("Last-Modified", ""),
        )
        job.store.save(name, record, fetched.body, parsed.entries)
    emit(
        replace(
            row,
            status=status,
            new_version=version,
            entries=len(parsed.entries),
            warnings=parsed.warnings,
        )
    )


def _parse(job: _Job, source: Source, name: str, fetched: Fetched) -> ParsedList:
    parsed = parse_manifest(
        fetched.body or b"", list_name=name, fmt=source.format, source=source.name
    )
    if job.strict and parsed.warnings:
        raise ManifestError(f"{parsed.warnings[0]} (--strict; kept the previous copy)")
    return parsed


def _parse_index(fetched: Fetched, source: str) -> dict[str, dict[str, str]]:
    try:
        doc: Any = json.loads(fetched.body or b"")
    except (ValueError, RecursionError) as exc:
        raise ManifestError(
            f"versions index of {source!r} ({redact(fetched.url)}) is not JSON: {exc!r}"
        ) from None
    if not isinstance(doc, dict):
        raise ManifestError(f"versions index of {source!r} must map list names to objects")
    index: dict[str, dict[str, str]] = {}
    for name, spec in doc.items():
        where = f"versions index of {source!r}, list {name!r}"
        if not is_plain_name(name):
            raise ManifestError(f"{where}: a list name must match [A-Za-z0-9_.-]+")
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ManifestError(f'{where}: needs a "url" string')
        md5 = spec.get("md5")
        if not isinstance(md5, str) or not MD5_RE.match(md5):
            raise ManifestError(f'{where}: "md5" must be 32 hex digits, got {md5!r}')
        version = spec.get("version", "")
        index[name] = {"url": spec["url"], "md5": md5.lower(), "version": str(version)}
    return index
