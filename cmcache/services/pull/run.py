"""The pull service: refs → targets, skip what is present and verified, download the rest."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cmcache.core.errors import (
    CacheError,
    CmcacheError,
    ExitCode,
    IntegrityError,
    RefError,
    UsageError,
)
from cmcache.core.states import PullOutcome
from cmcache.core.targets import Outcome, PullHooks, PullOptions, Target
from cmcache.services.download.placement import Placement, placement_for
from cmcache.services.sources.catalog import extra_paths

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.adapters.storage.index import Index
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.catalog import Catalog
    from cmcache.core.comfyui import ExtraPaths
    from cmcache.core.manifest.entry import Entry
    from cmcache.core.settings.model import Settings
    from cmcache.core.sourcerefs import Endpoints
    from cmcache.services.cache.store import Cache
    from cmcache.services.download.downloader import Downloader
    from cmcache.services.sources.refs import Sources


def resolve_targets(
    catalog: Catalog,
    store: ModelStore,
    refs: list[str],
    folder: str | None = None,
    *,
    siblings: bool = False,
    sources: Sources | None = None,
    name: str | None = None,
    endpoints: Endpoints | None = None,
) -> list[Target]:
    """Turn refs into targets; every unknown ref is reported at once, before any download.

    Links, ``hf:`` and Civitai refs are looked up in the catalog (the local list remembers
    them), else asked of their source through ``sources`` (None: no network, such a ref must be
    remembered). ``name`` names the file of the one such ref given.

    Raises:
        RefError: unknown or ambiguous refs.
        UsageError: a link or an ``hf:`` ref without ``--folder``; ``--name`` with several.
        CmcacheError: a source refused or failed (see ``Sources.resolve``).
    """
    from cmcache.core.sourcerefs import Endpoints, looks_like_source_ref
    from cmcache.services.sources.remembered import source_entry

    linked = [r for r in refs if looks_like_source_ref(r)]
    if name is not None and len(linked) != 1:
        raise UsageError("--name names the file of exactly one link or hf:/civitai: ref")
    entries: list[Entry] = []
    problems: list[RefError] = []
    for ref in refs:
        if looks_like_source_ref(ref):
            try:
                entries.append(
                    source_entry(
                        catalog,
                        ref,
                        folder=folder,
                        name=name,
                        sources=sources,
                        endpoints=endpoints or Endpoints(),
                    )
                )
            except RefError as exc:
                problems.append(exc)
            continue
        members = catalog.bundle_members(ref)
        if members:  # a bundle's name: all of it
            entries += members
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
    if siblings:  # to download a member is to fetch all; each bundle's members added once
        bundles = {e.bundle: None for e in entries if e.bundle is not None}
        for bundle in bundles:
            entries += [s for r in bundle.members if (s := catalog.get(r)) is not None]
    unique = {e.ref: e for e in entries}
    return [store.target(e) for e in unique.values()]


def resolve_refs(
    settings: Settings,
    refs: list[str],
    folder: str | None = None,
    *,
    siblings: bool = False,
    name: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> list[Target]:
    """Targets for refs of this configuration's catalog and root (see ``resolve_targets``);
    ``siblings`` adds the other members of a bundle a ref belongs to (they share one archive).
    A link or an ``hf:``/Civitai ref not remembered is asked of its source."""
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.services.sources.catalog import load_catalog
    from cmcache.services.sources.refs import Sources

    store = ModelStore(settings.cache.root)
    sources = Sources(settings, on_note=on_note)
    try:
        return resolve_targets(
            load_catalog(settings),
            store,
            refs,
            folder,
            siblings=siblings,
            sources=sources,
            name=name,
            endpoints=settings.endpoints,
        )
    finally:
        sources.close()


@dataclass(frozen=True)
class PullReport:
    """Every target's outcome."""

    outcomes: tuple[Outcome, ...]

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Targets that did not end present and verified."""
        return tuple(o for o in self.outcomes if o.outcome == PullOutcome.FAILED)


def pull(
    targets: list[Target],
    *,
    placement: Placement,
    make_downloader: Callable[[], Downloader],
    opts: PullOptions,
    force: bool = False,
    dry_run: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
    extra: ExtraPaths | None = None,
    lookup: str = "pull",
    sources: Sources,
) -> PullReport:
    """Skip present targets (no network, no daemon), in root or in ComfyUI's extra model
    paths; download the rest (``sources`` turns their refs into URLs)."""
    outcomes: dict[str, Outcome] = {}
    missing: list[Target] = []

    def settle(outcome: Outcome) -> None:
        outcomes[outcome.target.ref] = outcome
        if on_outcome:
            on_outcome(outcome)

    for target in targets:
        external = extra.find(target.entry.folder, target.entry.filename) if extra else None
        try:
            sha = None if external else placement.present(target, force=force)
        except IntegrityError as exc:
            message = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            settle(Outcome(target, PullOutcome.FAILED, code=int(exc.exit_code), message=message))
            continue
        if external is not None:  # ComfyUI finds it elsewhere: present, never managed
            settle(Outcome(target, PullOutcome.CACHED, external=external))
        elif sha is not None:
            if not placement.index.readonly:  # a read-only root answers; it cannot remember
                with contextlib.suppress(CacheError):  # a full disk: present all the same
                    placement.index.record_use(target.entry.folder, target.entry.filename)
            settle(Outcome(target, PullOutcome.CACHED, sha256=sha))
        else:
            missing.append(target)
    if dry_run:
        for target in missing:
            outcomes[target.ref] = Outcome(target, PullOutcome.PLANNED)
    elif missing and placement.index.readonly:
        for target in missing:
            why = f"{target.ref}: cannot download it: {placement.index.why_readonly}"
            settle(Outcome(target, PullOutcome.FAILED, code=int(ExitCode.CACHE), message=why))
    elif missing:
        downloader = make_downloader()
        forced = replace(opts, force=force)
        for outcome in _download(downloader, missing, forced, on_outcome, sources):
            outcomes[outcome.target.ref] = outcome
    report = PullReport(tuple(outcomes[t.ref] for t in targets))
    if not dry_run:
        count_outcomes(placement.index, report.outcomes, lookup)
    return report


def _download(
    downloader: Downloader,
    targets: list[Target],
    opts: PullOptions,
    on_outcome: Callable[[Outcome], None] | None,
    sources: Sources,
) -> list[Outcome]:
    """Download plain targets, bundle archives (or members from peers) and repositories'
    files side by side, then unpack the archives and place the repositories. Members peers
    did not deliver are then brought by their archive; members whose archive another node
    fetched while this one waited are then looked for at peers (in rounds till none is left)."""
    from cmcache.services.download.downloader import elsewhere
    from cmcache.services.pull.bundles import (
        archive_members,
        archive_target,
        by_bundle,
        members_from_peers,
    )
    from cmcache.services.pull.repos import Repositories, hf_repo_of

    outcomes: list[Outcome] = []

    def settle(outcome: Outcome) -> None:  # decided before anything downloads
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)

    repos = Repositories(downloader.store, downloader.placement, sources, force=opts.force)
    files = repos.plan([t for t in targets if hf_repo_of(t.entry) is not None], settle)
    plain = []
    for target in targets:
        if target.entry.bundle is not None or hf_repo_of(target.entry) is not None:
            continue
        try:  # a source's URL and announced sha256
            plain.append(replace(target, entry=sources.expand(target.entry)))
        except CmcacheError as exc:
            code, message = int(exc.exit_code), exc.message
            settle(Outcome(target, PullOutcome.FAILED, code=code, message=message))
    bundles = by_bundle([t for t in targets if t.entry.bundle is not None])
    peered, bundles = members_from_peers(downloader.cluster, bundles, opts.detach)
    batch = [*plain, *files]
    try:
        while True:
            missed: list[Target] = []  # members peers did not deliver: their archives follow
            waited: list[Target] = []  # members whose archive another node fetched meanwhile
            archives = [archive_target(downloader.store, ms) for ms in bundles.values()]
            for outcome in downloader.run([*batch, *peered, *archives], opts):
                if repos.owns(outcome.target):
                    repos.collect(outcome)
                elif elsewhere(outcome):
                    waited += bundles[outcome.target.entry.urls[0]]
                elif outcome.target.archive:
                    outcomes += archive_members(downloader, outcome, bundles, opts, on_outcome)
                elif outcome.target.entry.bundle is not None and not outcome.outcome.ok:
                    missed.append(outcome.target)
                else:
                    outcomes.append(outcome)
            if missed:
                downloader.on_note(
                    f"{len(missed)} bundle member(s) did not come from peers; fetching the archive"
                )
            # The node that fetched an archive announced its members: they come from it now,
            # unless it died first (the archive, on this node's turn).
            peered, bundles = members_from_peers(downloader.cluster, by_bundle(waited), opts.detach)
            bundles |= by_bundle(missed)
            if not peered and not bundles:
                return outcomes + repos.finish(on_outcome)
            batch = []
    finally:  # an archive whose members were never announced: its lock goes with the pull
        if downloader.cluster is not None:
            downloader.cluster.free()


def count_outcomes(index: Index, outcomes: Iterable[Outcome], lookup: str) -> None:
    """Feed `cmcache metrics`: hits and misses of this lookup, bytes and time downloaded."""
    if index.readonly:
        return
    with contextlib.suppress(CacheError):  # a full disk: the outcomes stand, uncounted
        _count(index, outcomes, lookup)


def _count(index: Index, outcomes: Iterable[Outcome], lookup: str) -> None:
    for o in outcomes:
        if o.outcome == PullOutcome.CACHED:
            index.bump("lookups", f"command={lookup},result=hit")
        elif o.outcome == PullOutcome.DOWNLOADED:
            index.bump("lookups", f"command={lookup},result=miss")
            index.bump("downloaded_bytes", f"source={o.via}", o.bytes)
            index.bump("downloads")
            index.bump("download_seconds", by=o.seconds)
            _count_source(index, o)
        elif o.outcome == PullOutcome.FAILED:
            index.bump("download_failures")


def _count_source(index: Index, o: Outcome) -> None:
    """Bytes and seconds per source host: what the "cost" policy divides a size by."""
    record = index.get_file(o.target.entry.folder, o.target.entry.filename)
    host = urlsplit(record.url).hostname if record is not None and record.url else None
    if o.via == "origin" and host and o.bytes > 0 and o.seconds > 0:
        index.bump("source_bytes", f"host={host}", o.bytes)
        index.bump("source_seconds", f"host={host}", o.seconds)


def pull_with_engine(
    settings: Settings,
    cache: Cache,
    targets: list[Target],
    opts: PullOptions,
    hooks: PullHooks,
    *,
    force: bool = False,
    dry_run: bool = False,
    lookup: str = "pull",
) -> PullReport:
    """Pull through aria2; a private daemon left idle is stopped afterwards. ``lookup`` names
    the command for the hit and miss counters."""
    from cmcache.adapters.aria2.link import EngineLink
    from cmcache.services.sources.refs import Sources
    from cmcache.services.sources.remembered import remember

    link = EngineLink(settings, keep=opts.detach)
    sources = Sources(settings, on_note=hooks.on_note)
    try:
        report = pull(
            targets,
            placement=placement_for(settings, cache.index),
            make_downloader=lambda: make_downloader(settings, cache, link, hooks),
            opts=opts,
            force=force,
            dry_run=dry_run,
            on_outcome=hooks.on_outcome,
            extra=extra_paths(settings),
            lookup=lookup,
            sources=sources,
        )
    finally:
        sources.close()
        link.finish()
    if not dry_run:
        remember(settings, targets, report.outcomes)
    return report


def make_downloader(
    settings: Settings, cache: Cache, link: EngineLink, hooks: PullHooks
) -> Downloader:
    """A downloader for this root whose reports go to ``hooks``."""
    link.warm_up()  # the daemon starts while the rest is set up
    from cmcache.adapters.http.resolve import Resolver
    from cmcache.services.cluster.node import cluster_for
    from cmcache.services.download.downloader import Downloader
    from cmcache.services.sources.refs import explainer

    resolver = Resolver(
        settings.token_for, on_retry=hooks.on_note, explain_denied=explainer(settings.endpoints)
    )
    cluster = cluster_for(settings, hooks.on_note)
    placement = Placement(cache.index)
    return Downloader(settings, cache.store, placement, link, resolver, hooks, cluster)


def cached_paths(settings: Settings, refs: list[str], lookup: str) -> list[Target] | None:
    """Targets of ``refs`` when every one is placed and unchanged (uses recorded), else None.

    The no-op answer of ``path`` and ``pull``: no network, no engine, no hashing.
    """
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.services.cache.store import existing_index
    from cmcache.services.sources.catalog import load_catalog

    store = ModelStore(settings.cache.root)  # a link or a ref must be remembered (no network)
    catalog = load_catalog(settings)
    targets = resolve_targets(catalog, store, refs, endpoints=settings.endpoints)
    index = existing_index(settings, readonly=False)
    if index is None:
        return None
    try:
        placement = Placement(index)
        if not all(placement.placed_record(t) for t in targets):
            return None
        if not index.readonly:  # a read-only root can still answer; it cannot remember
            for target in targets:
                index.record_use(target.entry.folder, target.entry.filename)
            index.bump("lookups", f"command={lookup},result=hit", len(targets))
    finally:
        index.close()
    return targets
