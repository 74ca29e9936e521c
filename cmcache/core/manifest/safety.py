"""Where a manifest may write and what it may fetch: checked at sync and again before use."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from cmcache.core.names import is_plain_name

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# The cache keeps its own files under <root>/.cmcache: no manifest may write there.
RESERVED_FOLDERS = {".cmcache"}


# A file name's bytes on common filesystems (ext4, xfs, NTFS, APFS).
MAX_SEGMENT_BYTES = 255


def control_character(text: str) -> bool:
    """Whether ``text`` holds a character aria2's line-based session file could read as syntax
    (a newline starts an option line there) or a terminal could act on."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def location_problem(folder: str, filename: str) -> str | None:
    """Why ``folder/filename`` may not be written under root, or None when it is safe."""
    if "\x00" in folder + filename:
        return "filename contains a NUL byte"
    if control_character(folder) or control_character(filename):
        return f"{folder!r}/{filename!r} contains a control character"
    if not is_plain_name(folder):
        return f"folder {folder!r} is not a plain folder name"
    if folder.lower() in RESERVED_FOLDERS:
        return f"folder {folder!r} is reserved for cmcache itself"
    if not filename:
        return "filename is empty"
    if "\\" in filename:
        return f"filename {filename!r} contains a backslash"
    if filename.startswith("/") or _DRIVE_RE.match(filename):
        return f"filename {filename!r} is absolute"
    parts = filename.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"filename {filename!r} has an empty, '.' or '..' segment"
    if any(len(part.encode()) > MAX_SEGMENT_BYTES for part in (folder, *parts)):
        return f"a name in {folder}/{filename[:40]}… is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def model_url_problem(url: str) -> str | None:
    """Why a manifest's or a workflow's model URL is refused: an http(s) URL, or a Hugging
    Face or Civitai ref (``hf:…``, ``civitai:…``, an AIR) of a valid form, is accepted."""
    from cmcache.core.errors import UsageError
    from cmcache.core.sourcerefs import Endpoints, parse_source_ref

    if control_character(url) or " " in url:
        return f"URL {url!r} contains white space or a control character"
    if url.lower().startswith(("http://", "https://")):
        return url_problem(url)
    try:
        found = parse_source_ref(url, Endpoints())
    except UsageError as exc:
        return exc.message
    return None if found is not None else url_problem(url)


def url_problem(url: str) -> str | None:
    """Why a model URL is refused, or None when it is an http(s) URL with a host."""
    if control_character(url) or " " in url:
        return f"URL {url!r} contains white space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        return f"URL {url!r} is malformed: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"URL {url!r} is not http or https"
    if not parts.hostname:
        return f"URL {url!r} has no host"
    return None
