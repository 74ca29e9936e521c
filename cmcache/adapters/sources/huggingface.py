"""The Hugging Face Hub as huggingface_hub talks to it.

A file: one HEAD of ``{endpoint}/OWNER/REPO/resolve/REV/PATH`` without following redirects
(a relative redirect, a renamed repository, is followed on the same host). An LFS file answers
``X-Linked-Etag: "<sha256>"`` and ``X-Linked-Size`` beside a redirect to its CDN; a small file
kept in git answers 200 with its size. A repository: ``GET {endpoint}/api/models/OWNER/REPO/tree/
REV?recursive=true``, pages joined by ``Link: <…>; rel="next"``; each file entry has ``type``,
``path``, ``size`` and, for LFS, ``lfs: {oid, size}`` (oid = sha256). Errors carry
``X-Error-Code`` (GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from cmcache.adapters.sources.transport import json_body
from cmcache.core.errors import DownloadError, RefError
from cmcache.core.hubs import HfTreeFile
from cmcache.core.names import SHA256_RE
from cmcache.core.sourcerefs import (
    HfFile,
    HfRepo,
    hf_page,
    hf_resolve_url,
    hf_tree_url,
    netloc_of,
)
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from cmcache.adapters.sources.transport import Reply, Transport

MAX_HOPS = 5
MAX_PAGES = 1000
_NEXT_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?', re.IGNORECASE)


@dataclass(frozen=True)
class HfFileInfo:
    """What the Hub announces about one file."""

    url: str  # the resolve URL (on the endpoint)
    sha256: str | None  # X-Linked-Etag of an LFS file
    size: int | None  # X-Linked-Size, else the length of a small file


def gated_message(endpoint: str, repo: str, had_token: bool = False) -> str:
    """What to do about a gated or private repository."""
    page = hf_page(endpoint, repo)
    if had_token:
        return f"gated or private: HF_TOKEN has no access yet; accept its license at {page}"
    return f"gated or private: accept its license at {page} and set HF_TOKEN"


class HuggingFace:
    """Ask one Hub endpoint about files and repositories."""

    def __init__(self, transport: Transport, endpoint: str) -> None:
        self._http = transport
        self.endpoint = endpoint

    def file_info(self, ref: HfFile) -> HfFileInfo:
        """One HEAD: the sha256 and size the Hub announces for a file.

        Raises:
            RefError: no such repository, revision or file.
            DownloadError: gated or private, or the Hub fails.
        """
        url = hf_resolve_url(self.endpoint, ref)
        reply = self._http.head(url)
        for _ in range(MAX_HOPS):
            location = reply.headers.get("location", "")
            if reply.status not in (301, 302, 307, 308) or not location:
                break
            if "x-linked-size" in reply.headers or netloc_of(urljoin(url, location)) != (
                netloc_of(url)
            ):
                break  # an LFS file's CDN: what we need is in this answer
            url = urljoin(url, location)  # a renamed repository, on the same host
            reply = self._http.head(url)
        self._check(reply, ref.repo, f"hf:{ref.repo}/{ref.path}@{ref.revision}")
        linked = reply.headers.get("x-linked-etag", "").strip()
        linked = linked.removeprefix("W/").strip('"').lower()
        size_text = reply.headers.get("x-linked-size", "")
        if not size_text and reply.status == 200:
            size_text = reply.headers.get("content-length", "")
        return HfFileInfo(
            hf_resolve_url(self.endpoint, ref),
            linked if SHA256_RE.match(linked) else None,
            int(size_text) if size_text.isdigit() else None,
        )

    def tree(self, ref: HfRepo) -> list[HfTreeFile]:
        """Every file of a repository at a revision, through the tree API (all pages).

        Raises:
            RefError: no such repository or revision.
            DownloadError: gated or private, or the Hub fails or answers nonsense.
        """
        url: str | None = hf_tree_url(self.endpoint, ref)
        files: list[HfTreeFile] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return files
            reply = self._http.get(url)
            self._check(reply, ref.repo, f"hf:{ref.repo}@{ref.revision}")
            doc = json_body(reply, "Hugging Face")
            if not isinstance(doc, list):
                raise DownloadError(f"Hugging Face's tree of {ref.repo} is not a list of files")
            files += [f for item in doc if (f := _tree_file(item)) is not None]
            url = _next_page(reply, url)
        raise DownloadError(f"Hugging Face's tree of {ref.repo} has more than {MAX_PAGES} pages")

    def _check(self, reply: Reply, repo: str, ref: str) -> None:
        code = reply.headers.get("x-error-code", "")
        if reply.status in (401, 403) or code == "GatedRepo":
            if code == "RepoNotFound" and reply.sent_token:
                raise RefError(f"Hugging Face knows no repository {repo}", ref=ref)
            raise DownloadError(f"{ref}: {gated_message(self.endpoint, repo, reply.sent_token)}")
        if reply.status == 404:
            what = {
                "RepoNotFound": f"no repository {repo}",
                "RevisionNotFound": f"no such revision of {repo}",
                "EntryNotFound": "no such file",
            }.get(code, "nothing there")
            raise RefError(f"{ref}: Hugging Face has {what}", ref=ref)
        if reply.status >= 400:
            where = redact(reply.url)
            raise DownloadError(f"Hugging Face answered HTTP {reply.status} for {where}")


def _next_page(reply: Reply, url: str) -> str | None:
    """The next page of a listing, on the same host only (a token goes along)."""
    match = _NEXT_RE.search(reply.headers.get("link", ""))
    if not match:
        return None
    following = urljoin(url, match.group(1))
    return following if netloc_of(following) == netloc_of(url) else None


def _tree_file(item: Any) -> HfTreeFile | None:
    """A file entry of the tree (directories are skipped)."""
    if not isinstance(item, dict) or item.get("type") != "file":
        return None
    path, size, lfs = item.get("path"), item.get("size"), item.get("lfs")
    if isinstance(lfs, dict):
        oid, lfs_size = lfs.get("oid"), lfs.get("size")
        sha = oid.lower() if isinstance(oid, str) and SHA256_RE.match(oid) else None
        size = lfs_size if isinstance(lfs_size, int) else size
    else:
        sha = None
    if not isinstance(path, str) or not path or isinstance(size, bool) or not isinstance(size, int):
        return None
    return HfTreeFile(path, size, sha)
