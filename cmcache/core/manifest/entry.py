"""One model file a manifest knows about, and its stored form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bundle:
    """One archive (zip or tar) that carries several models, each verified on its own.

    Every member's Entry points at the same Bundle; the archive's sha256 names its content, so
    two bundles compare (and hash) without walking their member lists.
    """

    name: str
    url: str
    sha256: str
    size: int | None
    format: str  # zip | tar
    members: tuple[str, ...] = field(compare=False)  # the refs it holds


@dataclass(frozen=True)
class Entry:
    """One model file a manifest knows about."""

    folder: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None
    size_exact: bool = True
    name: str = ""
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    list_name: str = ""
    bundle: Bundle | None = None  # set when the file arrives inside an archive

    @property
    def ref(self) -> str:
        """The canonical ref, ``folder/filename``."""
        return f"{self.folder}/{self.filename}"

    @property
    def exact_size(self) -> int | None:
        """The size to verify against, when the manifest states it in bytes."""
        return self.size if self.size_exact else None


def entries_to_doc(entries: tuple[Entry, ...] | list[Entry]) -> dict[str, Any]:
    """Validated entries as plain JSON data: each bundle once, its members pointing at it by
    number (a bundle of N members stored with each member would take N² space)."""
    bundles: dict[Bundle, int] = {}
    rows = []
    for entry in entries:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in entry.__dict__.items()}
        if entry.bundle is not None:
            data["bundle"] = bundles.setdefault(entry.bundle, len(bundles))
        rows.append(data)
    stored = [{**b.__dict__, "members": list(b.members)} for b in bundles]
    return {"bundles": stored, "entries": rows}


def entries_from_doc(doc: dict[str, Any]) -> list[Entry]:
    """Rebuild entries saved by ``entries_to_doc`` (already validated when they were synced);
    the members of one bundle share one Bundle again."""
    bundles = [Bundle(**{**b, "members": tuple(b["members"])}) for b in doc["bundles"]]
    return [_entry_from_dict(d, bundles) for d in doc["entries"]]


def _entry_from_dict(data: dict[str, Any], bundles: list[Bundle]) -> Entry:
    at = data.get("bundle")
    return Entry(
        folder=data["folder"],
        filename=data["filename"],
        urls=tuple(data["urls"]),
        sha256=data.get("sha256"),
        size=data.get("size"),
        size_exact=data.get("size_exact", True),
        name=data.get("name", ""),
        aliases=tuple(data.get("aliases", ())),
        tags=tuple(data.get("tags", ())),
        description=data.get("description", ""),
        source=data.get("source", ""),
        list_name=data.get("list_name", ""),
        bundle=bundles[at] if isinstance(at, int) else None,
    )
