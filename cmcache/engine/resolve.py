"""Follow redirects ourselves, so tokens reach only their own host and aria2 gets the final URL.

aria2 sends a ``header`` option to every redirect target (aria2 issue #1176): a Hugging Face
token would leak to the CDN. We walk the chain with HEAD requests, attach a token only to a hop
whose host is exactly the token's host, and read the hash Hugging Face announces on the way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from cmcache.errors import DownloadError

if TYPE_CHECKING:
    import requests

MAX_REDIRECTS = 10
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TokenLookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Resolved:
    """Where to download from, and what the origin announced about the bytes."""

    url: str
    token_host: str | None  # the final host when it has a token to receive, else None
    size: int | None
    sha256: str | None
    ranges: bool


class Resolver:
    """Resolve download URLs with retries; one HTTP session per process."""

    def __init__(
        self, token_for: TokenLookup, *, tries: int = 4, wait: float = 0.5, timeout: float = 30.0
    ) -> None:
        self._token_for = token_for
        self._tries = max(1, tries)
        self._wait = wait
        self._timeout = timeout
        self._session: requests.Session | None = None

    def _http(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = "cmcache"
        return self._session

    def token_header(self, host: str) -> str | None:
        """The Authorization header for exactly ``host``, if it has a token."""
        token = self._token_for(host)
        return f"Authorization: Bearer {token}" if token else None

    def resolve(self, url: str) -> Resolved:
        """Follow ``url`` to its final location.

        Raises:
            DownloadError: the chain fails (4xx, too many redirects, a non-http hop) or the
                origin keeps failing after retries.
        """
        import requests

        for attempt in range(self._tries):
            try:
                return self._walk(url)
            except _Transient as exc:
                if attempt + 1 >= self._tries:
                    raise DownloadError(f"{_safe(url)}: {exc}") from None
                time.sleep(self._wait * (2**attempt))
            except requests.RequestException as exc:
                if attempt + 1 >= self._tries:
                    raise DownloadError(
                        f"{_safe(url)}: cannot connect: {type(exc).__name__}"
                    ) from None
                time.sleep(self._wait * (2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _walk(self, url: str) -> Resolved:
        size: int | None = None
        sha256: str | None = None
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DownloadError(f"{_safe(url)} redirects to a non-http(s) URL; refused")
            host = parts.hostname.lower()
            headers = {"Accept-Encoding": "identity"}
            token = self._token_for(host)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = self._head(current, headers)
            linked = response.headers.get("X-Linked-Etag", "").strip().strip('"').lower()
            if linked.startswith("w/"):
                linked = linked[2:].strip('"')
            if _SHA256_RE.match(linked):
                sha256 = linked
            linked_size = response.headers.get("X-Linked-Size")
            if linked_size and linked_size.isdigit():
                size = int(linked_size)
            status = response.status_code
            if status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise DownloadError(f"{_safe(current)} redirects without a Location")
                current = urljoin(current, location)
                continue
            if status in (429, 500, 502, 503, 504):
                raise _Transient(f"the server answered HTTP {status}")
            if status in (401, 403):
                hint = "" if token else f"if {host} needs a login, set a token for it ([auth])"
                raise DownloadError(f"{_safe(current)}: HTTP {status} (access denied)", hint=hint)
            if status >= 400:
                raise DownloadError(f"{_safe(current)}: HTTP {status}")
            length = response.headers.get("Content-Length", "")
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if size is None and status == 200 and length.isdigit():
                size = int(length)
            elif size is None and status == 206 and total.isdigit():
                size = int(total)
            ranges = response.headers.get("Accept-Ranges", "").lower() == "bytes"
            return Resolved(current, host if token else None, size, sha256, ranges)
        raise DownloadError(f"{_safe(url)}: more than {MAX_REDIRECTS} redirects")

    def _head(self, url: str, headers: dict[str, str]) -> requests.Response:
        session = self._http()
        response = session.head(url, headers=headers, allow_redirects=False, timeout=self._timeout)
        if response.status_code in (405, 501):  # no HEAD: ask for one byte instead
            response = session.get(
                url,
                headers={**headers, "Range": "bytes=0-0"},
                allow_redirects=False,
                timeout=self._timeout,
                stream=True,
            )
            response.close()
        return response


class _Transient(Exception):
    """A failure worth retrying (5xx, 429)."""


def _safe(url: str) -> str:
    """A URL fit for messages: no query string (signed URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
