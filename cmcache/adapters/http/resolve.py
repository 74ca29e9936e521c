"""Follow redirects ourselves, so tokens reach only their own host and aria2 gets the final URL.

aria2 sends a ``header`` option to every redirect target (docs/aria2.md): a Hugging Face token
would leak to the CDN. We walk the chain with the request aria2 will make (GET with
``Range: bytes=0-0``: an origin may answer HEAD differently), attach a token only to a hop whose
host is exactly the token's host, and read the hash Hugging Face announces on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urljoin, urlsplit

from cmcache.adapters.http.session import RETRY_STATUSES, describe_error, new_session
from cmcache.core.errors import DownloadError
from cmcache.core.names import SHA256_RE
from cmcache.core.sourcerefs import netloc_of
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import requests

MAX_REDIRECTS = 10
TokenLookup: TypeAlias = "Callable[[str], str | None]"
# Says why a host refused access (a service's own words and next step), given the URL and
# whether a token was sent; None keeps the general message.
DeniedExplainer: TypeAlias = "Callable[[str, bool], str | None]"


@dataclass(frozen=True)
class Resolved:
    """Where to download from, and what the origin announced about the bytes."""

    url: str
    token_host: str | None  # the final host[:port] when it has a token to receive, else None
    size: int | None
    sha256: str | None
    ranges: bool
    validators: tuple[str, str] = ("", "")  # (ETag, Last-Modified) of the final answer
    disposition: str = ""  # the final answer's Content-Disposition (the server's file name)


class Resolver:
    """Resolve download URLs; one HTTP session (with retries) per resolver."""

    def __init__(
        self,
        token_for: TokenLookup,
        *,
        tries: int = 4,
        timeout: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
        explain_denied: DeniedExplainer | None = None,
    ) -> None:
        self._token_for = token_for
        self._tries = tries
        self._timeout = timeout
        self._on_retry = on_retry
        self._explain_denied = explain_denied
        self._session: requests.Session | None = None

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = new_session(tries=self._tries, on_retry=self._on_retry)
        return self._session

    def token_header(self, host: str) -> str | None:
        """The Authorization header for exactly ``host`` (``host[:port]``), if it has a token."""
        token = self._token_for(host)
        return f"Authorization: Bearer {token}" if token else None

    def resolve(self, url: str) -> Resolved:
        """Follow ``url`` to its final location.

        Raises:
            DownloadError: the chain fails (4xx, too many redirects, a non-http hop) or the
                origin keeps failing after retries.
        """
        import requests

        try:
            return self._walk(url)
        except requests.RequestException as exc:
            raise DownloadError(
                f"{redact(url)}: cannot connect: {describe_error(exc)}",
                hint=f"check the network and the URL; cmcache retried {self._tries - 1} times",
            ) from None

    def with_mirrors(
        self, resolved: Resolved, mirrors: Sequence[str], on_skip: Callable[[str], None]
    ) -> list[str]:
        """The final URL, then each mirror's that can share one download with it.

        aria2 sends one header to every URI of a download: a mirror on another host than the
        token's is left out rather than handed the token.
        """
        uris = [resolved.url]
        for mirror in mirrors:
            try:
                extra = self.resolve(mirror)
            except DownloadError as exc:
                on_skip(f"mirror skipped: {exc.message}")
                continue
            if extra.token_host == resolved.token_host:
                uris.append(extra.url)
        return uris

    def _walk(self, url: str) -> Resolved:
        size: int | None = None
        sha256: str | None = None
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DownloadError(f"{redact(url)} redirects to a non-http(s) URL; refused")
            host = netloc_of(current)
            headers = {"Accept-Encoding": "identity", "Range": "bytes=0-0"}
            token = self._token_for(host)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = self._probe(current, headers)
            linked = response.headers.get("X-Linked-Etag", "").strip().strip('"').lower()
            if linked.startswith("w/"):
                linked = linked[2:].strip('"')
            if SHA256_RE.match(linked):
                sha256 = linked
            linked_size = response.headers.get("X-Linked-Size")
            if linked_size and linked_size.isdigit():
                size = int(linked_size)
            status = response.status_code
            if status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise DownloadError(f"{redact(current)} redirects without a Location")
                current = urljoin(current, location)
                continue
            if status in RETRY_STATUSES:
                raise DownloadError(
                    f"{redact(current)}: the server answered HTTP {status} "
                    f"{self._tries} times; giving up"
                )
            if status in (401, 403):
                explain = self._explain_denied
                explained = explain(current, bool(token)) if explain else None
                if explained:
                    raise DownloadError(f"{redact(current)}: HTTP {status}: {explained}")
                hint = "" if token else f"if {host} needs a login, set a token for it ([auth])"
                raise DownloadError(f"{redact(current)}: HTTP {status} (access denied)", hint=hint)
            if status >= 400:
                raise DownloadError(f"{redact(current)}: HTTP {status}")
            length = response.headers.get("Content-Length", "")
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if size is None and status == 206 and total.isdigit():
                size = int(total)
            elif size is None and status == 200 and length.isdigit():
                size = int(length)
            ranges = status == 206 or response.headers.get("Accept-Ranges", "") == "bytes"
            validators = (
                response.headers.get("ETag", ""),
                response.headers.get("Last-Modified", ""),
            )
            disposition = response.headers.get("Content-Disposition", "")
            token_host = host if token else None
            return Resolved(current, token_host, size, sha256, ranges, validators, disposition)
        raise DownloadError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects")

    def _probe(self, url: str, headers: dict[str, str]) -> requests.Response:
        # The body is never read: closing the streamed answer drops the connection at once.
        response = self._http().get(
            url, headers=headers, allow_redirects=False, timeout=self._timeout, stream=True
        )
        response.close()
        return response
