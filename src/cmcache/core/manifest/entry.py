"""One model file a manifest knows about, and its stored form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    @property
    def ref(self) -> str:
        """The canonical ref, ``folder/filename``."""
        return f"{self.folder}/{self.filename}"

    @property
    def exact_size(self) -> int | None:
        """The size to verify against, when the manifest states it in bytes."""
        return self.size if self.size_exact else None


def entry_to_dict(entry: Entry) -> dict[str, Any]:
    """A validated entry as plain JSON data."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in entry.__dict__.items()}


def entry_from_dict(data: dict[str, Any]) -> Entry:
    """Rebuild an entry saved by ``entry_to_dict`` (already validated when it was synced)."""
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
    )
