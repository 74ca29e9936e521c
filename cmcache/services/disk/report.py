"""`report`: what holds space and could go — unused managed models, files no catalog knows,
duplicates, partial downloads nobody will finish — and what the prefetch workflows need."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cmcache.adapters.storage.hash_cache import HASHES, HashCache
from cmcache.adapters.storage.hashing import sha256_file
from cmcache.adapters.storage.model_store import ModelStore
from cmcache.core.errors import ManifestError
from cmcache.core.manifest.safety import location_problem
from cmcache.core.states import LocalState, ProgressState
from cmcache.core.targets import Progress
from cmcache.core.workflow import read_workflow
from cmcache.services.cache.store import existing_index
from cmcache.services.comfyui.workflow import workflow_files
from cmcache.services.disk.dedupe import plan_links
from cmcache.services.disk.survey import Name, Survey, look
from cmcache.services.download.partials import orphaned, partials
from cmcache.services.sources.catalog import extra_paths, load_catalog

if TYPE_CHECKING:
    from collections.abc import Callable

    from cmcache.core.settings.model import Settings

DAY = 86400.0


@dataclass(frozen=True)
class Unused:
    """A managed model not used for a long time, or never."""

    ref: str
    bytes: int
    last_used: float | None
    pinned: bool


@dataclass(frozen=True)
class Held:
    """A file that holds space: its path relative to root, and its bytes."""

    path: str
    bytes: int


@dataclass(frozen=True)
class Duplicate:
    """The same bytes at several paths, and what `dedupe` would free."""

    sha256: str
    bytes: int
    paths: tuple[str, ...]
    reclaimable: int


@dataclass(frozen=True)
class WorkflowNeeds:
    """The models one prefetch workflow names, and those not present."""

    workflow: str
    references: tuple[str, ...]
    missing: tuple[str, ...]
    problem: str = ""  # the file could not be read as a workflow


@dataclass(frozen=True)
class DiskReport:
    """Every section of `report`."""

    unused_days: float
    unused: tuple[Unused, ...]
    unknown: tuple[Held, ...]
    duplicates: tuple[Duplicate, ...]
    partials: tuple[Held, ...]
    workflows: tuple[WorkflowNeeds, ...]
    unhashed: int  # unmanaged files whose sha256 is not known
    hashed: int  # files hashed by this run
    hashed_bytes: int


def disk_report(
    settings: Settings,
    *,
    unused_days: float | None = None,
    hash_files: bool = False,
    on_progress: Callable[[list[Progress]], None] | None = None,
) -> DiskReport:
    """Look at root once (and hash unmanaged files with ``hash_files``); change nothing else
    (the hashes are remembered in ``<root>/.cmcache/hashes.json``)."""
    days = settings.cache.keep_days * 4 if unused_days is None else unused_days
    store = ModelStore(settings.cache.root)
    hashes = HashCache(store.meta_dir / HASHES)
    index = existing_index(settings)  # read-only: the report changes no record or job
    try:
        survey = look(store, index, hashes)
        hashed, hashed_bytes = 0, 0
        if hash_files:
            survey, hashed, hashed_bytes = _hash_unmanaged(survey, hashes, on_progress)
            hashes.keep_only([n.rel for n in survey.names])
            hashes.save()
        last = index.last_uses() if index is not None else {}
        left = orphaned(settings, store, index, partials(store, survey.staged))
    finally:
        if index is not None:
            index.close()
    cutoff = time.time() - days * DAY
    managed = {(n.record.folder, n.record.filename): n for n in survey.names if n.record}
    unused = [  # a repository is one model, however many files it has
        Unused(f"{r.folder}/{r.filename}", r.size, last.get(key), n.pinned)
        for key, n in managed.items()
        if (r := n.record) is not None and last.get(key, 0.0) < cutoff
    ]
    return DiskReport(
        days,
        tuple(sorted(unused, key=lambda u: (-u.bytes, u.ref))),
        _unknown(settings, survey),
        _duplicates(survey),
        tuple(Held(p.relative_to(store.root), p.bytes) for p in left),
        _workflows(settings, store),
        sum(1 for n in survey.names if n.record is None and n.sha256 is None),
        hashed,
        hashed_bytes,
    )


def _unknown(settings: Settings, survey: Survey) -> tuple[Held, ...]:
    """Unmanaged files no catalog knows, by path or (when hashed) by sha256; largest first."""
    catalog = load_catalog(settings)
    known = {e.sha256.lower() for e in catalog.entries if e.sha256}
    found = [
        Held(n.rel, n.found.size)
        for n in survey.names
        if n.record is None
        and not n.found.spare_link
        and catalog.get(n.rel) is None
        and (n.sha256 is None or n.sha256.lower() not in known)
    ]
    return tuple(sorted(found, key=lambda h: (-h.bytes, h.path)))


def _duplicates(survey: Survey) -> tuple[Duplicate, ...]:
    """Bytes known (by sha256) to sit in several files, most reclaimable first."""
    by_sha: dict[str, list[Name]] = {}
    for n in survey.names:
        if n.sha256 is not None and n.found.size > 0 and not n.found.spare_link:
            by_sha.setdefault(n.sha256, []).append(n)
    freed: dict[str, int] = {}
    for plan in plan_links(survey.names):
        freed[plan.sha256] = freed.get(plan.sha256, 0) + plan.reclaimable
    found = [
        Duplicate(sha, names[0].found.size, tuple(n.rel for n in names), freed.get(sha, 0))
        for sha, names in by_sha.items()
        if len({n.found.inode for n in names}) > 1
    ]
    return tuple(sorted(found, key=lambda d: (-d.reclaimable, -d.bytes, d.sha256)))


def _hash_unmanaged(
    survey: Survey, hashes: HashCache, on_progress: Callable[[list[Progress]], None] | None
) -> tuple[Survey, int, int]:
    """Hash every unmanaged file whose sha256 is not known, each inode once."""
    todo: dict[tuple[int, int], list[int]] = {}
    for at, n in enumerate(survey.names):
        if n.record is None and n.sha256 is None and not n.found.spare_link:
            todo.setdefault(n.found.inode, []).append(at)
    total = sum(survey.names[ats[0]].found.size for ats in todo.values())
    done = 0
    started = time.monotonic()

    def seen(count: int) -> None:
        nonlocal done
        done += count
        if on_progress is not None:
            speed = int(done / max(time.monotonic() - started, 1e-3))
            on_progress([Progress("unmanaged files", ProgressState.VERIFYING, done, total, speed)])

    names = list(survey.names)
    hashed = 0
    for ats in todo.values():
        first = names[ats[0]]
        try:
            sha = sha256_file(survey.root / first.rel, seen)
        except OSError:
            continue  # gone or unreadable since the walk: left unknown
        hashed += 1
        for at in ats:
            names[at] = names[at]._replace(sha256=sha)
            hashes.put(names[at].rel, names[at].found.fingerprint, sha)
    return replace(survey, names=tuple(names)), hashed, total


def _workflows(settings: Settings, store: ModelStore) -> tuple[WorkflowNeeds, ...]:
    """For each ``[prefetch] workflows`` file: the models it names, and those not present
    (under root or in ComfyUI's extra model paths)."""
    extra = extra_paths(settings)
    out = []
    for path in workflow_files(settings):
        try:
            needs = read_workflow(json.loads(path.read_bytes()), str(path))
        except (OSError, ValueError, RecursionError, ManifestError) as exc:
            out.append(WorkflowNeeds(str(path), (), (), getattr(exc, "message", str(exc))))
            continue
        named = [(folder, name.replace("\\", "/")) for folder, name in needs.named]
        named += [(d.folder, d.name.replace("\\", "/")) for d in needs.declared]
        refs = list(dict.fromkeys(named))
        # A name that would leave its folder is never looked for: it counts as missing.
        safe = [(f, n) for f, n in refs if location_problem(f, n) is None]
        states = store.states(safe)
        present = {r for r in safe if states[r] == LocalState.CACHED or extra.find(*r)}
        missing = [f"{f}/{n}" for f, n in refs if (f, n) not in present]
        out.append(WorkflowNeeds(str(path), tuple(f"{f}/{n}" for f, n in refs), tuple(missing)))
    return tuple(out)
