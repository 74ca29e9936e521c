"""The shapes of names and digests cmcache accepts, defined once."""

from __future__ import annotations

import re

# A model folder, a source or a list name: one plain path segment.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")


def is_plain_name(name: str) -> bool:
    """A single safe path segment: ``[A-Za-z0-9_.-]+`` and not ``.`` or ``..``."""
    return bool(NAME_RE.match(name)) and name not in (".", "..")
