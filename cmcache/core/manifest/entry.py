"""One model file a manifest knows about, and its stored form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bundle:
    """One archive (zip or tar) that carries several models, each verified on its own."""

    name: str
    url: str
    sha256: str
    size: int | None
    format: str  # zip | tar
    members: tuple[str, ...]  # the refs it holds


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


def entry_to_dict(entry: Entry) -> dict[str, Any]:
    """A validated entry as plain JSON data."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in entry.__dict__.items()}
    if entry.bundle is not None:
        data["bundle"] = {**entry.bundle.__dict__, "members": list(entry.bundle.members)}
    return data


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
        bundle=_bundle_from_dict(data.get("bundle")),
    )


def _bundle_from_dict(data: Any) -> Bundle | None:
    if not isinstance(data, dict):
        return None
    return Bundle(**{**data, "members": tuple(data["members"])})
