"""Civitai's REST API (``{endpoint}/api/v1/…``): model versions, models, search, by hash.

Shapes as Civitai documents them: a model version has ``id``, ``modelId``, ``name``,
``model: {name, type}`` and ``files[]``; each file ``name``, ``sizeKB``, ``type``,
``metadata: {format, size, fp}``, ``hashes: {SHA256, …}`` (upper-case hex), ``primary`` and
``downloadUrl``. A model has ``id``, ``name``, ``type`` and ``modelVersions[]``, newest first;
a search answers ``{items: [model…], metadata}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cmcache.adapters.sources.transport import json_body
from cmcache.core.errors import DownloadError, RefError
from cmcache.core.hubs import CivitaiFile, CivitaiVersion
from cmcache.core.names import SHA256_RE
from cmcache.core.sourcerefs import civitai_api
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from cmcache.adapters.sources.transport import Reply, Transport

SERVICE = "Civitai"
LOGIN_NEEDED = "Civitai needs an API token for this file: set CIVITAI_API_TOKEN"


class Civitai:
    """Ask one Civitai endpoint about models."""

    def __init__(self, transport: Transport, endpoint: str) -> None:
        self._http = transport
        self.endpoint = endpoint

    def version(self, version_id: int) -> CivitaiVersion:
        """``GET /api/v1/model-versions/VERSION``.

        Raises:
            RefError: Civitai has no such version.
            DownloadError: Civitai cannot be reached, refuses, or answers nonsense.
        """
        reply = self._get(f"model-versions/{version_id}", f"civitai:{version_id}")
        return _version(json_body(reply, SERVICE), None)

    def newest_version(self, model_id: int) -> CivitaiVersion:
        """The newest version of a model (``GET /api/v1/models/MODEL``).

        Raises:
            RefError: no such model, or it has no version.
            DownloadError: as for ``version``.
        """
        reply = self._get(f"models/{model_id}", f"civitai:model/{model_id}")
        versions = _model_versions(json_body(reply, SERVICE))
        if not versions:
            raise RefError(f"Civitai model {model_id} has no version", ref=f"civitai:{model_id}")
        return versions[0]

    def search(self, query: str, limit: int = 20) -> list[CivitaiVersion]:
        """Every version of the models a search finds (``GET /api/v1/models?query=…``)."""
        reply = self._get(f"models?query={quote(query)}&limit={limit}", query)
        doc = json_body(reply, SERVICE)
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise _nonsense(reply)
        return [v for item in items if isinstance(item, dict) for v in _model_versions(item)]

    def by_hash(self, sha256: str) -> CivitaiVersion | None:
        """The version holding a file of this sha256, or None
        (``GET /api/v1/model-versions/by-hash/HASH``)."""
        try:
            reply = self._get(f"model-versions/by-hash/{sha256.upper()}", sha256)
        except RefError:
            return None
        return _version(json_body(reply, SERVICE), None)

    def _get(self, path: str, ref: str) -> Reply:
        reply = self._http.get(civitai_api(self.endpoint, path))
        if reply.status in (401, 403):
            if reply.sent_token:
                raise DownloadError(
                    f"Civitai refused the API token (HTTP {reply.status}) for {ref}",
                    hint="check CIVITAI_API_TOKEN ([auth] civitai.com)",
                )
            raise DownloadError(f"{ref}: {LOGIN_NEEDED}")
        if reply.status == 404:
            raise RefError(f"Civitai knows no {ref}", ref=ref)
        if reply.status != 200:
            raise DownloadError(f"Civitai answered HTTP {reply.status} for {redact(reply.url)}")
        return reply


def _nonsense(reply: Reply) -> DownloadError:
    return DownloadError(f"Civitai's answer to {redact(reply.url)} is not what its API documents")


def _model_versions(model: Any) -> list[CivitaiVersion]:
    if not isinstance(model, dict) or not isinstance(model.get("modelVersions"), list):
        return []
    versions = []
    for item in model["modelVersions"]:
        try:
            versions.append(_version(item, model))
        except DownloadError:
            continue  # one malformed version does not hide the others
    return versions


def _version(doc: Any, model: dict[str, Any] | None) -> CivitaiVersion:
    """A version from its JSON; ``model`` is the model it is listed under, if any."""
    about = (doc.get("model") if isinstance(doc, dict) else None) or model or {}
    try:
        version_id = _integer(doc["id"])
        model_id = _integer(doc.get("modelId") or (model or {}).get("id"))
        files = doc.get("files") or []
        if not isinstance(files, list):
            raise TypeError("files")
        return CivitaiVersion(
            version_id,
            model_id,
            str(doc.get("name") or ""),
            str(about.get("name") or ""),
            str(about.get("type") or ""),
            tuple(f for item in files if (f := _file(item)) is not None),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DownloadError("Civitai answered a model version without its id or files") from None


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(value)
    return int(value)


def _file(item: Any) -> CivitaiFile | None:
    """One ``files[]`` item; None when it lacks a name or a download URL."""
    if not isinstance(item, dict):
        return None
    name, url = item.get("name"), item.get("downloadUrl")
    if not isinstance(name, str) or not name or not isinstance(url, str) or not url:
        return None
    hashes, meta = item.get("hashes"), item.get("metadata")
    hashes = hashes if isinstance(hashes, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    sha = hashes.get("SHA256")
    size = item.get("sizeKB")
    return CivitaiFile(
        name=name,
        size_kb=None if isinstance(size, bool) or not isinstance(size, int | float) else size,
        sha256=sha.lower() if isinstance(sha, str) and SHA256_RE.match(sha) else None,
        download_url=url,
        primary=item.get("primary") is True,
        type=str(item.get("type") or ""),
        format=str(meta.get("format") or ""),
        size_label=str(meta.get("size") or ""),
        fp=str(meta.get("fp") or ""),
    )
