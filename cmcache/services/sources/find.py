"""Find on Civitai a model a workflow names but nobody declares (``cmcache find``,
``pull --workflow --find``): candidates are the files named exactly so."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cmcache.core.errors import CmcacheError
from cmcache.core.filenames import MODEL_EXTENSIONS
from cmcache.core.manifest.entry import Entry
from cmcache.core.sourcerefs import CivitaiRef, canonical, civitai_page
from cmcache.services.sources.refs import LOCAL_SOURCE

if TYPE_CHECKING:
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.hubs import CivitaiVersion
    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target
    from cmcache.services.comfyui.workflow import Unknown
    from cmcache.services.sources.refs import Sources


@dataclass(frozen=True)
class Candidate:
    """A Civitai file whose name is exactly the one looked for."""

    filename: str
    ref: str  # civitai:VERSION, with type/format when it is not the version's primary file
    page: str
    model: str
    version: str
    model_type: str
    size: int | None  # approximate (Civitai's sizeKB)
    sha256: str | None
    download_url: str

    def describe(self) -> str:
        """One line: ref, model and version, size, hash, page."""
        from cmcache.core.sizes import format_size

        sha = (self.sha256 or "")[:12] or "no sha256"
        size = f"~{format_size(self.size)}" if self.size is not None else "size unknown"
        return f"{self.ref}: {self.model} ({self.version}), {size}, sha256 {sha}…, {self.page}"


def search_words(name: str) -> str:
    """What to ask Civitai's search for a file name: its stem, ``_`` and ``-`` as spaces."""
    stem = name.rsplit("/", 1)[-1]
    for ext in MODEL_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    return re.sub(r"[_\-.\s]+", " ", stem).strip() or stem


def find_candidates(sources: Sources, name: str, sha256: str | None = None) -> list[Candidate]:
    """Civitai files named exactly ``name``: by hash first when one is known, then by search.

    Raises:
        CmcacheError: Civitai cannot be reached or refuses.
    """
    api = sources.civitai()
    versions: list[CivitaiVersion] = []
    if sha256:
        found = api.by_hash(sha256)
        if found is not None:
            versions.append(found)
    if not versions:
        versions = api.search(search_words(name))
    out: dict[tuple[int, str], Candidate] = {}
    for version in versions:
        primary = version.pick()
        for file in version.files:
            if file.name != name or (sha256 and file.sha256 and file.sha256 != sha256.lower()):
                continue
            selectors = () if file == primary else _selectors(file.type, file.format)
            out[version.id, file.name] = Candidate(
                filename=file.name,
                ref=canonical(CivitaiRef(version.id, None, selectors)),
                page=civitai_page(sources.endpoints.civitai, version.model_id, version.id),
                model=version.model_name,
                version=version.name,
                model_type=version.model_type,
                size=file.approx_bytes,
                sha256=file.sha256,
                download_url=file.download_url,
            )
    return list(out.values())


def _selectors(kind: str, fmt: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in (("type", kind), ("format", fmt)) if v))


def find_name(settings: Settings, name: str, sha256: str | None) -> list[Candidate]:
    """``cmcache find``: the candidates for one file name."""
    from cmcache.services.sources.refs import Sources

    sources = Sources(settings)
    try:
        return find_candidates(sources, name, sha256)
    finally:
        sources.close()


def find_unknown(
    sources: Sources, store: ModelStore, unknown: tuple[Unknown, ...]
) -> tuple[list[Target], tuple[Unknown, ...]]:
    """Targets for the unknown models Civitai has exactly one file for; the rest stay unknown,
    each with what was found (several candidates, none, or why Civitai could not be asked)."""
    targets: list[Target] = []
    left: list[Unknown] = []
    for u in unknown:
        base = u.filename.rsplit("/", 1)[-1]
        try:
            found = find_candidates(sources, base, u.sha256)
        except CmcacheError as exc:
            left.append(replace(u, reason=f"{u.reason}; Civitai could not be asked: {exc.message}"))
            continue
        if len(found) == 1:
            c = found[0]
            entry = Entry(
                u.folder,
                u.filename,
                (c.download_url,),
                sha256=c.sha256,
                size=c.size,
                size_exact=False,
                name=c.model,
                description=f"Civitai: {c.model} ({c.version})",
                source=LOCAL_SOURCE,
                list_name=LOCAL_SOURCE,
                aliases=(c.ref,),
            )
            sources.on_note(f"{u.ref}: found on Civitai as {c.ref} ({c.page})")
            targets.append(store.target(entry))
        elif found:
            why = f"Civitai has {len(found)} files of that name; pull the right one by its ref"
            left.append(replace(u, reason=why, candidates=tuple(c.describe() for c in found)))
        else:
            left.append(replace(u, reason=f"{u.reason}; Civitai has no file of that name"))
    return targets, tuple(left)
