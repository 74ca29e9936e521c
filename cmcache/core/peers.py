"""What the cluster reads from Redis, checked: anything any node (or anyone with Redis access)
wrote there is input, so every record is parsed here before it is used, and a bad one is
skipped with a reason instead of crashing a pull.

Peer URLs are plain ``http(s)://host:port`` bases: no user, path, query or fragment, so a
signed model path can only ever be appended to a host, never smuggled into another request.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)$")
_UNREACHABLE = ("0.0.0.0", "[::]")  # noqa: S104 (refused, not bound): listen-anywhere addresses: no peer can connect to them


class BadRecord(ValueError):
    """A value in Redis that does not have the shape cmcache writes."""


def peer_base(url: object) -> str:
    """A peer's URL reduced to ``scheme://host:port``.

    Raises:
        BadRecord: not a plain http(s) base URL (a path, query, user, fragment, control
            characters, a listen-anywhere host, or no host at all).
    """
    if not isinstance(url, str) or not url or not url.isprintable() or " " in url:
        raise BadRecord(f"peer URL {url!r} is not a printable URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadRecord(f"peer URL {url!r} does not parse") from None
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if parts.scheme not in ("http", "https"):
        raise BadRecord(f"peer URL {url!r} is not http(s)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in url or "#" in url:
        raise BadRecord(f"peer URL {url!r} has a path, query or fragment: only a base is allowed")
    if "@" in parts.netloc or not _HOST_RE.match(host):
        raise BadRecord(f"peer URL {url!r} does not name a plain host")
    if host in _UNREACHABLE:
        raise BadRecord(f"peer URL {url!r} names a listen-anywhere address, not a reachable one")
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True)
class NodeRecord:
    """A node's heartbeat as written by its `cmcache serve`."""

    url: str  # a checked base (``peer_base``)
    models: int
    bytes: int
    seen: float
    instance: str  # which `serve` process wrote it: two nodes sharing one name differ here


def parse_node(raw: str) -> NodeRecord:
    """A heartbeat value.

    Raises:
        BadRecord: not JSON, or a field missing or of the wrong kind.
    """
    doc = _json_object(raw)
    return NodeRecord(
        peer_base(doc.get("url")),
        _count(doc.get("models", 0), "models"),
        _count(doc.get("bytes", 0), "bytes"),
        _number(doc.get("seen", 0), "seen"),
        str(doc.get("instance", "")),
    )


@dataclass(frozen=True)
class Holding:
    """What a node says it holds of one model: verified bytes with this sha256 and size."""

    sha256: str  # "" when the holder could not tell (a model without any hash)
    size: int


def parse_holding(raw: str) -> Holding:
    """A holder value.

    Raises:
        BadRecord: not JSON, a sha256 that is not 64 hex digits, or a size that is no count.
    """
    doc = _json_object(raw)
    sha = doc.get("sha256", "")
    if not isinstance(sha, str) or (sha and not SHA256_RE.match(sha)):
        raise BadRecord(f"sha256 {sha!r} is not 64 hex digits")
    return Holding(sha, _count(doc.get("size"), "size"))


@dataclass(frozen=True)
class Fetching:
    """What a node says it is downloading now: bytes that must end as this sha256 and size,
    whose finished pieces its `serve` hands out until ``until`` (unix time) unless renewed."""

    sha256: str
    size: int
    until: float


def parse_fetching(raw: str) -> Fetching:
    """A "fetching" value.

    Raises:
        BadRecord: not JSON, a sha256 that is not 64 hex digits (it must be known: a reader
            checks the bytes against it), a size that is no count, or no expiry.
    """
    doc = _json_object(raw)
    sha = doc.get("sha256")
    if not isinstance(sha, str) or not SHA256_RE.match(sha):
        raise BadRecord(f"sha256 {sha!r} is not 64 hex digits")
    return Fetching(sha, _count(doc.get("size"), "size"), _number(doc.get("until"), "until"))


def _json_object(raw: str) -> dict[str, object]:
    try:
        doc = json.loads(raw)
    except (TypeError, ValueError):
        raise BadRecord("not JSON") from None
    if not isinstance(doc, dict):
        raise BadRecord("not a JSON object")
    return doc


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRecord(f"{name} {value!r} is not a whole number ≥ 0")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecord(f"{name} {value!r} is not a number")
    return float(value)


def relay_parent(line: list[str], me: int, fanout: int, present: set[str]) -> str | None:
    """Whom the node at ``line[me]`` copies a model from while it is fetched: its parent in a
    tree of ``fanout`` children per node laid over the line of nodes in the order they asked
    (``line[0]``, the origin fetcher, at the root); when the parent is not ``present`` (gone,
    or not fetching yet), its nearest ancestor that is, else the nearest node before it in
    the line that is. Never a node after it: two nodes never wait on each other. None when
    no node before it is present."""
    if not 0 < me < len(line):
        return None
    at = me
    while at > 0:
        at = (at - 1) // max(1, fanout)
        if line[at] in present:
            return line[at]
    return next((node for node in reversed(line[:me]) if node in present), None)
