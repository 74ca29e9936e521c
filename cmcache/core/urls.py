"""URLs as cmcache shows and stores them: never with credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` without userinfo, query or fragment (signed URLs carry credentials there)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "<an unparsable URL>"
    hidden = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + hidden
