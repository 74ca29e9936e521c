"""Publishing manifests: lists of a model folder, and a versions index whose MD5s change only
for lists whose content changed. Pure: file facts in, documents out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

VERSIONS_INDEX = "model_versions.json"


@dataclass(frozen=True)
class PublishedFile:
    """One model file of the published folder."""

    folder: str
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PublishedBundle:
    """An archive of several published files, listed as one bundle entry."""

    name: str
    sha256: str
    size: int
    members: tuple[PublishedFile, ...]

    @property
    def path(self) -> str:
        """Where it lives under the published folder."""
        return f"bundles/{self.name}.zip"


def list_document(
    name: str,
    version: str,
    base_url: str,
    files: list[PublishedFile],
    bundles: list[PublishedBundle] | None = None,
) -> bytes:
    """A cmcache-format list; the same files give the same bytes (sorted, stable JSON)."""
    base = base_url.rstrip("/")
    models: list[dict[str, Any]] = [
        {
            "folder": f.folder,
            "filename": f.filename,
            "url": f"{base}/{quote(f.folder)}/{quote(f.filename)}",
            "sha256": f.sha256,
            "size": f.size,
        }
        for f in sorted(files, key=lambda f: (f.folder, f.filename))
    ]
    for bundle in sorted(bundles or [], key=lambda b: b.name):
        members = [
            {"folder": f.folder, "filename": f.filename, "sha256": f.sha256, "size": f.size}
            for f in bundle.members
        ]
        models.append(
            {
                "bundle": bundle.name,
                "url": f"{base}/{quote(bundle.path)}",
                "format": "zip",
                "sha256": bundle.sha256,
                "size": bundle.size,
                "members": members,
            }
        )
    doc = {"schema": 1, "name": name, "version": version, "models": models}
    return (json.dumps(doc, indent=1, sort_keys=False) + "\n").encode()


def models_of(document: bytes) -> Any:
    """The part of a published list that counts as its content (not its version)."""
    try:
        return json.loads(document).get("models")
    except (ValueError, AttributeError):
        return None


def md5_of(data: bytes) -> str:
    """MD5 as versions indexes state it."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
