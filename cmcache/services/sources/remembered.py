"""The local list (SPEC §13, "Remembered"): what a link, an ``hf:`` or a Civitai ref pulled.

A pulled source ref becomes an entry of the list ``local`` (source ``local``) whose aliases are
the refs it was pulled with, so ``list``, ``show``, ``path``, ``pin``, ``prune`` and ``verify``
know it by its ref, its file name or that ref, and the same ref needs no network again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cmcache.adapters.storage.local_list import LocalList
from cmcache.core.catalog import Catalog
from cmcache.core.comfyui import modern_folder
from cmcache.core.errors import RefError, UsageError
from cmcache.core.sourcerefs import (
    canonical,
    looks_like_source_ref,
    parse_source_ref,
    without_secrets,
)
from cmcache.core.states import PullOutcome
from cmcache.core.urls import redact
from cmcache.services.sources.refs import LOCAL_SOURCE

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cmcache.core.manifest.entry import Entry
    from cmcache.core.settings.model import Settings
    from cmcache.core.sourcerefs import Endpoints
    from cmcache.core.targets import Outcome, Target
    from cmcache.services.sources.refs import Sources


def local_list(settings: Settings) -> LocalList:
    """``<state>/local.json``."""
    return LocalList(settings.paths.state_dir / "local.json")


def source_entry(
    catalog: Catalog,
    text: str,
    *,
    folder: str | None,
    name: str | None,
    sources: Sources | None,
    endpoints: Endpoints,
) -> Entry:
    """The entry a source ref names: one the catalog knows by that ref (the local list's
    aliases, or a list's URL), else what the source says (``sources``; None: no network).

    Raises:
        RefError: without ``sources``, a ref nothing remembers.
        CmcacheError: as ``Sources.resolve``.
    """
    ref = parse_source_ref(text, endpoints)
    assert ref is not None
    key = canonical(ref)
    known = [e for e in remembered(catalog, key, endpoints) if _fits(e, folder, name)]
    if len(known) == 1:
        return known[0]
    if sources is None:
        raise RefError(f"{redact(text)} is not remembered here", ref=text)
    return sources.resolve(text, ref, folder, name)


def remembered(catalog: Catalog, key: str, endpoints: Endpoints) -> list[Entry]:
    """Entries known by the canonical ref ``key``: by an alias, else by their own URL."""
    low = key.lower()
    entries = catalog.unique_entries()
    by_alias = [e for e in entries if any(a.lower() == low for a in e.aliases)]
    if by_alias:
        return by_alias
    found = []
    for entry in entries:
        if not entry.urls or entry.bundle is not None:
            continue
        try:
            ref = parse_source_ref(entry.urls[0], endpoints)
        except UsageError:
            continue
        if ref is not None and canonical(ref).lower() == low:
            found.append(entry)
    return found


def _fits(entry: Entry, folder: str | None, name: str | None) -> bool:
    """Whether a known entry is where ``--folder``/``--name`` ask for it."""
    if folder and modern_folder(folder) != entry.folder:
        return False
    return not name or name == entry.filename


def remember(settings: Settings, targets: Iterable[Target], outcomes: Iterable[Outcome]) -> None:
    """Add what source refs brought (present and verified now) to the local list; URLs are
    kept without credentials."""
    asked = {t.ref: t.entry for t in targets if t.entry.source == LOCAL_SOURCE}
    entries = []
    for outcome in outcomes:
        entry = asked.get(outcome.target.ref)
        if entry is None or not outcome.outcome.ok or outcome.external is not None:
            continue
        downloaded = outcome.outcome == PullOutcome.DOWNLOADED and outcome.bytes > 0
        size = outcome.bytes if downloaded else entry.exact_size
        entries.append(
            replace(
                entry,
                urls=tuple(without_secrets(u) for u in entry.urls),
                sha256=outcome.sha256 or entry.sha256,
                size=size,
                size_exact=size is not None,
            )
        )
    local_list(settings).remember(entries)


@dataclass(frozen=True)
class Forgotten:
    """A model dropped from the local list, and whether its file was deleted."""

    ref: str
    deleted: bool
    bytes: int
    note: str = ""


def local_entry(settings: Settings, text: str) -> Entry:
    """The local-list entry ``text`` names: its ref, file name, name or a ref it was pulled with.

    Raises:
        RefError: the local list holds no such model.
    """
    entries, _problem = local_list(settings).entries()
    catalog = Catalog(tuple(entries))
    if looks_like_source_ref(text):
        ref = parse_source_ref(text, settings.endpoints)
        key = canonical(ref) if ref is not None else text
        found = remembered(catalog, key, settings.endpoints)
        if len(found) == 1:
            return found[0]
        raise RefError(f"{redact(text)} is not in the local list", ref=text)
    try:
        return catalog.resolve(text)
    except RefError as exc:
        raise RefError(
            f"{text!r} is not in the local list", ref=text, candidates=exc.candidates
        ) from None


def forget_models(settings: Settings, refs: list[str], *, delete: bool) -> list[Forgotten]:
    """Drop models from the local list; with ``delete`` their files go too (safely: under their
    lock, the index marked first). Every ref is resolved before anything changes.

    Raises:
        RefError: a ref names nothing in the local list.
    """
    from cmcache.services.cache.prune import remove_now
    from cmcache.services.cache.store import open_cache

    entries = list({e.ref: e for e in (local_entry(settings, r) for r in refs)}.values())
    done: dict[str, Forgotten] = {}
    if delete:
        with open_cache(settings) as cache:
            for entry in entries:
                freed, note = remove_now(cache, entry.folder, entry.filename)
                done[entry.ref] = Forgotten(entry.ref, freed is not None, freed or 0, note)
    local_list(settings).forget(e.ref for e in entries)
    return [done.get(e.ref, Forgotten(e.ref, False, 0)) for e in entries]
