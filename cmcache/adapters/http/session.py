"""One HTTP session per process for every request cmcache makes itself (lists, indexes, HEADs).

urllib3's ``Retry`` retries connection errors and 429/5xx answers with exponential back-off and
honours ``Retry-After``; a subclass reports each retry as it happens, so a user sees why a
command is waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from typing_extensions import Self

RETRY_STATUSES = (429, 500, 502, 503, 504)
RetryNote = Callable[[str], None]


class NotifyingRetry(Retry):
    """A Retry that tells ``on_retry`` about each attempt it is about to make."""

    on_retry: RetryNote | None = None

    def new(self, **kw: Any) -> Self:
        fresh = super().new(**kw)
        fresh.on_retry = self.on_retry
        return fresh

    def increment(self, *args: Any, **kwargs: Any) -> Self:
        fresh = super().increment(*args, **kwargs)  # raises when the retries are used up
        if self.on_retry is not None:
            response = kwargs.get("response")
            error = kwargs.get("error")
            why = f"HTTP {response.status}" if response is not None else describe_error(error)
            attempt = len(fresh.history) + 1
            self.on_retry(f"{why}; retrying (attempt {attempt})")
        return fresh


def new_session(
    *, tries: int = 4, backoff: float = 0.5, on_retry: RetryNote | None = None
) -> requests.Session:
    """A session that retries idempotent requests ``tries - 1`` times."""
    retry = NotifyingRetry(
        total=max(0, tries - 1),
        connect=max(0, tries - 1),
        read=max(0, tries - 1),
        status=max(0, tries - 1),
        backoff_factor=backoff,
        backoff_max=30,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
        redirect=0,
    )
    retry.on_retry = on_retry
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "cmcache"
    return session


def describe_error(error: BaseException | None) -> str:
    """Name the cause of a failed connection the way a person can act on it."""
    text = repr(error) if error is not None else ""
    lowered = text.lower()
    causes = (
        (
            (
                "name or service not known",
                "nodename nor servname",
                "getaddrinfo",
                "name resolution",
                "temporary failure in name",
            ),
            "cannot resolve the host name (offline, or a typo?)",
        ),
        (("connection refused",), "the connection was refused (nothing listens there)"),
        (("ssl", "certificate", "tls"), "the TLS handshake failed (certificate or proxy)"),
        (("timed out", "timeout"), "the connection timed out"),
        (
            ("connection reset", "connection aborted", "remote end closed", "broken pipe"),
            "the connection was dropped",
        ),
        (("network is unreachable", "no route to host"), "the network is unreachable"),
    )
    for needles, cause in causes:
        if any(n in lowered for n in needles):
            return cause
    return type(error).__name__ if error is not None else "the request failed"
