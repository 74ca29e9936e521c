"""URLs as cmcache shows and stores them: never with credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterable


def redact(url: str) -> str:
    """``url`` without userinfo, query or fragment (signed URLs carry credentials there)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "<an unparsable URL>"
    hidden = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + hidden


def host_allowed(host: str, hosts: Iterable[str]) -> bool:
    """Whether ``host`` is one of ``hosts`` or a subdomain of one."""
    host = host.lower()
    return bool(host) and any(host == h or host.endswith("." + h) for h in hosts)
