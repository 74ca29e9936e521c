"""Refs as users copy them from model pages (SPEC §13), turned into entries cmcache can pull.

A Hugging Face file costs one HEAD (its sha256 and size); a repository is listed when it is
pulled (services/pull/repos.py); a Civitai version is one API call, kept in the index, so a version
resolved once needs no network again; a plain link is one probe of its redirect chain, for the
server's file name. Every huggingface.co and civitai.com URL is fetched from its endpoint.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from cmcache.core.errors import CacheError, DownloadError, ManifestError, RefError, UsageError
from cmcache.core.filenames import (
    disposition_filename,
    has_model_extension,
    plain_name_problem,
    url_filename,
)
from cmcache.core.hubs import CivitaiVersion, civitai_folder, version_from_dict, version_to_dict
from cmcache.core.manifest.entry import Entry
from cmcache.core.manifest.safety import location_problem, url_problem
from cmcache.core.sourcerefs import (
    DEFAULT_HF,
    CivitaiRef,
    HfFile,
    HfRepo,
    PlainUrl,
    canonical,
    hf_resolve_url,
    netloc_of,
    parse_source_ref,
    to_endpoint,
)
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    from cmcache.adapters.http.api import ApiClient
    from cmcache.adapters.http.resolve import Resolver
    from cmcache.adapters.sources.civitai import Civitai
    from cmcache.adapters.sources.huggingface import HuggingFace
    from cmcache.adapters.storage.index import Index
    from cmcache.core.settings.model import Settings
    from cmcache.core.sourcerefs import Endpoints, SourceRef

LOCAL_SOURCE = "local"


def explainer(endpoints: Endpoints) -> Callable[[str, bool], str | None]:
    """Why Hugging Face or Civitai refused a download, in their users' words."""

    def explain(url: str, had_token: bool) -> str | None:
        from cmcache.adapters.sources.civitai import LOGIN_NEEDED
        from cmcache.adapters.sources.huggingface import gated_message

        host = netloc_of(url)
        if host == endpoints.civitai_netloc:
            if had_token:
                return "Civitai refused the API token: check CIVITAI_API_TOKEN"
            return LOGIN_NEEDED
        if host == endpoints.hf_netloc:
            with contextlib.suppress(UsageError):
                ref = parse_source_ref(url, endpoints)
                if isinstance(ref, HfFile | HfRepo):
                    return gated_message(endpoints.hf, ref.repo, had_token)
        return None

    return explain


class Sources:
    """Resolve and expand source refs for one configuration; the network only when needed."""

    def __init__(self, settings: Settings, *, on_note: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.endpoints = settings.endpoints
        self.on_note = on_note or (lambda _text: None)
        self._client: ApiClient | None = None
        self._index: Index | None = None
        self._index_tried = False

    def close(self) -> None:
        """Close the index if it was opened."""
        if self._index is not None:
            self._index.close()
            self._index = None

    # ------------------------------------------------------------ the services

    def client(self) -> ApiClient:
        """The HTTP client for API calls (one session)."""
        from cmcache.adapters.http.api import ApiClient

        if self._client is None:
            self._client = ApiClient(self.settings.token_for, on_retry=self.on_note)
        return self._client

    def civitai(self) -> Civitai:
        """Civitai at its endpoint."""
        from cmcache.adapters.sources.civitai import Civitai

        return Civitai(self.client(), self.endpoints.civitai)

    def hub(self) -> HuggingFace:
        """The Hugging Face Hub at its endpoint."""
        from cmcache.adapters.sources.huggingface import HuggingFace

        return HuggingFace(self.client(), self.endpoints.hf)

    def resolver(self, tries: int = 4) -> Resolver:
        """A redirect resolver that explains the services' refusals."""
        from cmcache.adapters.http.resolve import Resolver

        return Resolver(
            self.settings.token_for,
            tries=tries,
            on_retry=self.on_note,
            explain_denied=explainer(self.endpoints),
        )

    # ------------------------------------------------------------ refs a user typed

    def resolve(self, text: str, ref: SourceRef, folder: str | None, name: str | None) -> Entry:
        """The entry a source ref names, remembered under ``canonical(ref)`` once pulled.

        Raises:
            UsageError: a folder is needed and not given, or no file name can be told.
            RefError: the source knows no such model or file.
            ManifestError: the resulting location is unsafe.
            DownloadError: the source cannot be reached, or refuses (gated, token needed).
        """
        if isinstance(ref, CivitaiRef):
            entry = self._civitai_entry(ref, folder, name)
        elif isinstance(ref, HfFile):
            entry = self._hf_file_entry(ref, _need_folder(folder, text), name)
        elif isinstance(ref, HfRepo):
            url = canonical(ref)
            entry = Entry(_need_folder(folder, text), name or ref.name, (url,), name=ref.repo)
        else:
            entry = self._link_entry(ref, _need_folder(folder, text), name)
        problem = location_problem(entry.folder, entry.filename)
        if problem:
            raise ManifestError(f"cannot store {redact(text)}: {problem}", hint="choose --name")
        if not isinstance(ref, HfRepo) and not has_model_extension(entry.filename):
            self.on_note(
                f"{entry.ref}: the name has no model extension; ComfyUI will not list it "
                "(choose one with --name)"
            )
        aliases = tuple(dict.fromkeys((*entry.aliases, canonical(ref))))
        return replace(entry, source=LOCAL_SOURCE, list_name=LOCAL_SOURCE, aliases=aliases)

    def civitai_version(self, ref: CivitaiRef) -> CivitaiVersion:
        """The version a Civitai ref names (its model's newest when it names no version); a
        version once resolved is kept in the index and read from there."""
        if ref.version is None:
            assert ref.model is not None
            version = self.civitai().newest_version(ref.model)
        else:
            cached = self._cached_version(ref.version)
            if cached is not None:
                return cached
            version = self.civitai().version(ref.version)
        self._keep_version(version)
        return version

    def _civitai_entry(self, ref: CivitaiRef, folder: str | None, name: str | None) -> Entry:
        version = self.civitai_version(ref)
        picked = version.pick(ref.selectors)
        label = f"civitai:{version.id}"
        if picked is None:
            raise RefError(
                f"{label} has no file matching {dict(ref.selectors)}",
                ref=label,
                candidates=tuple(f"{f.name} ({f.type})" for f in version.files),
            )
        problem = None if name else plain_name_problem(picked.name)
        if problem:  # a name from the network must not make folders
            raise ManifestError(f"{label}: Civitai names the file {problem}", hint="choose --name")
        folder = folder or civitai_folder(version.model_type)
        if not folder:
            raise UsageError(
                f"{label} is a {version.model_type or 'untyped'!r} model: ComfyUI has no folder "
                "for that type",
                hint="say where it goes with --folder",
            )
        aliases = [canonical(CivitaiRef(version.id, None, ref.selectors))]
        if picked == version.pick():
            aliases.append(canonical(CivitaiRef(version.id)))  # what civitai:VERSION picks too
        return Entry(
            folder,
            name or picked.name,
            (picked.download_url,),
            sha256=picked.sha256,
            size=picked.approx_bytes,
            size_exact=False,
            name=version.model_name,
            tags=tuple(t for t in (version.model_type, picked.type) if t),
            description=f"Civitai: {version.model_name} ({version.name})",
            aliases=tuple(aliases),
        )

    def _hf_file_entry(self, ref: HfFile, folder: str, name: str | None) -> Entry:
        info = self.hub().file_info(ref)
        url = hf_resolve_url(DEFAULT_HF, ref)  # remembered as huggingface.co: endpoints change
        base = ref.path.rsplit("/", 1)[-1]
        sha, size = info.sha256, info.size
        return Entry(folder, name or base, (url,), sha256=sha, size=size, name=ref.repo)

    def _link_entry(self, ref: PlainUrl, folder: str, name: str | None) -> Entry:
        problem = url_problem(ref.url)
        if problem:
            raise UsageError(problem.replace(ref.url, redact(ref.url)))
        if name:
            return Entry(folder, name, (ref.url,))
        resolved = self.resolver().resolve(to_endpoint(ref.url, self.endpoints))
        found = disposition_filename(resolved.disposition) or url_filename(resolved.url)
        if not found:
            raise UsageError(
                f"cannot tell a file name from {redact(ref.url)}", hint="give one with --name"
            )
        problem = plain_name_problem(found)
        if problem:
            raise ManifestError(
                f"{redact(ref.url)}: the server names the file {problem}",
                hint="choose a name with --name",
            )
        return Entry(folder, found, (ref.url,), sha256=resolved.sha256, size=resolved.size)

    # ------------------------------------------------------------ entries about to download

    def expand(self, entry: Entry) -> Entry:
        """``entry`` with URLs aria2 can fetch (endpoints, Hugging Face ``resolve/``, a Civitai
        version's file) and the sha256 its source announces when the entry states none.

        Raises:
            CmcacheError: the source refuses (gated, a token needed) or knows no such file.
        """
        urls = tuple(self._concrete(u) for u in entry.urls)
        sha, size = entry.sha256, entry.size
        exact = entry.size_exact
        ref = self._parse(entry.urls[0])
        if isinstance(ref, CivitaiRef) and (sha is None or ref.version is None):
            urls, sha = self._civitai_file(entry, ref, urls)
        elif isinstance(ref, HfFile) and sha is None:
            info = self.hub().file_info(ref)
            sha = info.sha256
            if entry.exact_size is None and info.size is not None:
                size, exact = info.size, True
        elif isinstance(ref, HfRepo):
            raise UsageError(f"{entry.ref}: {entry.urls[0]} is a whole repository")
        return replace(entry, urls=urls, sha256=sha, size=size, size_exact=exact)

    def _civitai_file(
        self, entry: Entry, ref: CivitaiRef, urls: tuple[str, ...]
    ) -> tuple[tuple[str, ...], str | None]:
        try:
            version = self.civitai_version(ref)
        except DownloadError as exc:
            if not urls[0].lower().startswith(("http://", "https://")):
                raise
            # The download itself may still work: it is then checked by size alone.
            self.on_note(f"{entry.ref}: cannot ask Civitai for its sha256 ({exc.message})")
            return urls, entry.sha256
        picked = version.pick(ref.selectors)
        if picked is None:
            label = f"civitai:{version.id}"
            raise RefError(f"{label} has no file matching {dict(ref.selectors)}", ref=entry.ref)
        first = to_endpoint(picked.download_url, self.endpoints)
        return (first, *urls[1:]), entry.sha256 or picked.sha256

    def _concrete(self, url: str) -> str:
        ref = self._parse(url)
        if isinstance(ref, HfFile):
            return hf_resolve_url(self.endpoints.hf, ref)
        if isinstance(ref, CivitaiRef) and ref.version is not None:
            query = "&".join(f"{k}={v}" for k, v in ref.selectors)
            path = f"{self.endpoints.civitai}/api/download/models/{ref.version}"
            return path + (f"?{query}" if query else "")
        return to_endpoint(url, self.endpoints)

    def _parse(self, url: str) -> SourceRef | None:
        try:
            return parse_source_ref(url, self.endpoints)
        except UsageError:
            return None

    # ------------------------------------------------------------ resolutions kept

    def _open_index(self) -> Index | None:
        if not self._index_tried:
            self._index_tried = True
            from cmcache.adapters.storage.index import Index, writable
            from cmcache.adapters.storage.model_store import ModelStore
            from cmcache.services.cache.store import existing_index

            path = ModelStore(self.settings.cache.root).index_path
            with contextlib.suppress(CacheError):
                self._index = Index(path) if writable(path) else existing_index(self.settings)
        return self._index

    def _cached_version(self, version_id: int) -> CivitaiVersion | None:
        index = self._open_index()
        raw = index.resolution(f"civitai:{version_id}") if index is not None else None
        if raw is None:
            return None
        try:
            return version_from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            return None  # kept by another cmcache, or damaged: ask again

    def _keep_version(self, version: CivitaiVersion) -> None:
        index = self._open_index()
        if index is None or index.readonly:
            return
        with contextlib.suppress(CacheError):  # a cache of answers: losing one costs a call
            index.keep_resolution(f"civitai:{version.id}", json.dumps(version_to_dict(version)))


def _need_folder(folder: str | None, text: str) -> str:
    if not folder:
        raise UsageError(
            f"{redact(text)} needs --folder to say where it goes",
            hint=f"cmcache pull --folder loras {redact(text)}",
        )
    return folder
