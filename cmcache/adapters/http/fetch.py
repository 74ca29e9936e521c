"""Fetch small documents (manifests, indexes) over http(s), file:// or a local path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cmcache.adapters.http.session import describe_error, new_session
from cmcache.core.errors import ManifestError
from cmcache.core.sourcerefs import netloc_of
from cmcache.core.urls import redact

if TYPE_CHECKING:
    import requests

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_DOCUMENT = 256 * 1024 * 1024  # a manifest larger than this is a mistake, not a catalog


@dataclass(frozen=True)
class Fetched:
    """A fetched document; ``body`` is None when the origin answered 304 Not Modified."""

    url: str
    body: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def md5(self) -> str:
        """MD5 of the body, as versions indexes state it."""
        return hashlib.md5(self.body or b"", usedforsecurity=False).hexdigest()


TokenLookup = Callable[[str], "str | None"]


def to_url(location: str, base_dir: Path) -> str:
    """Turn a config location into a URL; local paths are relative to ``base_dir``."""
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("http", "https", "file"):
        return location
    if len(scheme) > 1:
        raise ManifestError(f"unsupported URL scheme {scheme!r} in {redact(location)!r}")
    return (base_dir / Path(location).expanduser()).absolute().as_uri()


class Fetcher:
    """Fetch documents with timeouts and retries; tokens only to their exact host."""

    def __init__(
        self, token_for: TokenLookup | None = None, on_retry: Callable[[str], None] | None = None
    ) -> None:
        self._token_for = token_for
        self._on_retry = on_retry
        self._session: requests.Session | None = None

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = new_session(on_retry=self._on_retry)
        return self._session

    def get(self, url: str, *, etag: str = "", last_modified: str = "") -> Fetched:
        """Fetch ``url``; with ``etag``/``last_modified`` a 304 gives ``body=None``.

        Raises:
            ManifestError: unreachable, an HTTP error, or too large.
        """
        parts = urlsplit(url)
        if parts.scheme == "file":
            from urllib.request import url2pathname

            return self._read_file(url, Path(url2pathname(parts.path)))
        if parts.scheme not in ("http", "https"):
            raise ManifestError(f"unsupported URL scheme in {redact(url)!r}")
        import requests

        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        token = self._token_for(netloc_of(url)) if self._token_for else None
        if token:
            # requests drops Authorization when a redirect leaves this host.
            headers["Authorization"] = f"Bearer {token}"
        try:
            with self._http().get(
                url, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True
            ) as response:
                if response.status_code == 304:
                    return Fetched(url, None, dict(response.headers))
                if response.status_code >= 400:
                    raise ManifestError(
                        f"{redact(url)}: the server answered HTTP {response.status_code}"
                    )
                body = bytearray()
                for chunk in response.iter_content(1 << 16):
                    body += chunk
                    if len(body) > MAX_DOCUMENT:
                        raise ManifestError(f"{redact(url)}: larger than {MAX_DOCUMENT} bytes")
                return Fetched(url, bytes(body), dict(response.headers))
        except requests.RequestException as exc:
            raise ManifestError(f"{redact(url)}: cannot fetch: {describe_error(exc)}") from None

    @staticmethod
    def _read_file(url: str, path: Path) -> Fetched:
        try:
            return Fetched(url, path.read_bytes())
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
