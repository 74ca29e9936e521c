"""Requests to a service's API (Civitai's REST API, Hugging Face's HEAD and tree API).

No redirect is followed here (the caller decides, since a redirect may leave the token's host),
a token goes only to the exact ``host[:port]`` it belongs to, and a body is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.adapters.http.session import describe_error, new_session
from cmcache.core.errors import DownloadError
from cmcache.core.sourcerefs import netloc_of
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import requests

MAX_BODY = 64 * 1024 * 1024  # an API answer larger than this is not one


@dataclass(frozen=True)
class Reply:
    """One answer: status, headers (names in lower case), body."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    sent_token: bool


class ApiClient:
    """GET and HEAD with retries (429/5xx, connection errors) and per-host tokens."""

    def __init__(
        self,
        token_for: Callable[[str], str | None],
        *,
        tries: int = 4,
        timeout: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self._token_for = token_for
        self._tries = tries
        self._timeout = timeout
        self._on_retry = on_retry
        self._session: requests.Session | None = None

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = new_session(tries=self._tries, on_retry=self._on_retry)
        return self._session

    def get(self, url: str) -> Reply:
        """GET ``url`` (JSON accepted), without following redirects.

        Raises:
            DownloadError: the host cannot be reached, or the body is too large.
        """
        return self._request("GET", url, {"Accept": "application/json"})

    def head(self, url: str) -> Reply:
        """HEAD ``url`` without following redirects (what Hugging Face announces there).

        Raises:
            DownloadError: the host cannot be reached.
        """
        return self._request("HEAD", url, {"Accept-Encoding": "identity"})

    def _request(self, method: str, url: str, headers: dict[str, str]) -> Reply:
        import requests

        token = self._token_for(netloc_of(url))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with self._http().request(
                method,
                url,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
                stream=True,
            ) as response:
                body = bytearray()
                if method == "GET":
                    for chunk in response.iter_content(1 << 16):
                        body += chunk
                        if len(body) > MAX_BODY:
                            raise DownloadError(f"{redact(url)}: answer larger than {MAX_BODY}")
                names = {k.lower(): v for k, v in response.headers.items()}
                return Reply(url, response.status_code, names, bytes(body), bool(token))
        except requests.RequestException as exc:
            raise DownloadError(
                f"{redact(url)}: cannot connect: {describe_error(exc)}",
                hint=f"check the network and the endpoint; cmcache retried {self._tries - 1} times",
            ) from None
