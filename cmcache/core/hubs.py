"""What Civitai and Hugging Face say about a model, as plain data, and the rules applied to it:
which file of a version is meant, which folder a model type goes to, a repository's digest."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

# Civitai's model type (lower-case) → the ComfyUI folder its files go to.
CIVITAI_FOLDERS = {
    "checkpoint": "checkpoints",
    "lora": "loras",
    "locon": "loras",
    "dora": "loras",
    "textualinversion": "embeddings",
    "vae": "vae",
    "controlnet": "controlnet",
    "upscaler": "upscale_models",
    "hypernetwork": "hypernetworks",
    "motionmodule": "animatediff_models",
}


def civitai_folder(model_type: str) -> str | None:
    """The folder of a Civitai model type, or None for a type with no ComfyUI folder."""
    return CIVITAI_FOLDERS.get(model_type.strip().lower())


@dataclass(frozen=True)
class CivitaiFile:
    """One file of a model version (``files[]``)."""

    name: str
    size_kb: float | None
    sha256: str | None  # lower-case; Civitai writes it upper-case
    download_url: str
    primary: bool = False
    type: str = ""  # Model, Pruned Model, Training Data, VAE, Config, …
    format: str = ""  # metadata.format: SafeTensor, PickleTensor, …
    size_label: str = ""  # metadata.size: full, pruned
    fp: str = ""  # metadata.fp: fp16, fp32, …

    @property
    def approx_bytes(self) -> int | None:
        """``sizeKB`` in bytes: a display size, never used to verify."""
        return round(self.size_kb * 1024) if self.size_kb is not None else None

    def matches(self, selectors: dict[str, str]) -> bool:
        """Whether the download URL's ``type``/``format``/``size``/``fp`` pick this file."""
        own = {"type": self.type, "format": self.format, "size": self.size_label, "fp": self.fp}
        return all(own.get(k, "").lower() == v.lower() for k, v in selectors.items())


@dataclass(frozen=True)
class CivitaiVersion:
    """A model version with its model's name and type."""

    id: int
    model_id: int
    name: str
    model_name: str
    model_type: str
    files: tuple[CivitaiFile, ...]

    def pick(self, selectors: Iterable[tuple[str, str]] = ()) -> CivitaiFile | None:
        """The file the selectors pick (the primary one among several), else the primary
        file, else the first model file; None when nothing matches."""
        wanted = dict(selectors)
        files = [f for f in self.files if f.matches(wanted)] if wanted else list(self.files)
        if not files:
            return None
        primary = [f for f in files if f.primary]
        models = [f for f in files if f.type.lower() == "model"]
        return (primary or models or files)[0]


def version_to_dict(version: CivitaiVersion) -> dict[str, Any]:
    """A resolution as JSON data (kept in the index)."""
    return {**asdict(version), "files": [asdict(f) for f in version.files]}


def version_from_dict(data: dict[str, Any]) -> CivitaiVersion:
    """Rebuild a resolution saved by ``version_to_dict``.

    Raises:
        KeyError, TypeError: the data is not such a resolution.
    """
    files = tuple(CivitaiFile(**f) for f in data["files"])
    return CivitaiVersion(
        int(data["id"]),
        int(data["model_id"]),
        str(data["name"]),
        str(data["model_name"]),
        str(data["model_type"]),
        files,
    )


@dataclass(frozen=True)
class HfTreeFile:
    """A file of a Hugging Face repository, as the tree API lists it."""

    path: str
    size: int
    sha256: str | None  # lfs.oid of an LFS file; None for a small file kept in git


def repo_digest(files: Iterable[tuple[str, str]]) -> str:
    """The sha256 a whole repository is recorded with: over its (path, sha256) pairs, sorted,
    so the same files give the same digest however they were listed."""
    digest = hashlib.sha256()
    for path, sha in sorted(files):
        digest.update(f"{path}\0{sha}\n".encode())
    return digest.hexdigest()
