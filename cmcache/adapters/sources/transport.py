"""What the sources need of HTTP: a GET and a HEAD that follow no redirects.

The services hand in ``adapters.http.api.ApiClient``; adapters do not import one another.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from cmcache.core.errors import DownloadError
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Mapping


class Reply(Protocol):
    """One answer."""

    @property
    def url(self) -> str: ...

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # names in lower case

    @property
    def body(self) -> bytes: ...

    @property
    def sent_token(self) -> bool: ...


class Transport(Protocol):
    """GET and HEAD without following redirects."""

    def get(self, url: str) -> Reply: ...

    def head(self, url: str) -> Reply: ...


def json_body(reply: Reply, service: str) -> Any:
    """The JSON document of an answer.

    Raises:
        DownloadError: the body is not JSON (a proxy's error page, a cut-off answer).
    """
    try:
        return json.loads(reply.body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DownloadError(
            f"{service} answered {redact(reply.url)} with something that is not JSON",
            hint="a proxy or a captive portal may be in the way; retry later",
        ) from None
