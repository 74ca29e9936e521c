"""ComfyUI's model folders as ComfyUI itself sees them: legacy names and extra model paths.

Mirrors ComfyUI's ``folder_paths.map_legacy`` and ``utils/extra_config.py`` so that cmcache and
ComfyUI agree on where a model is.
"""

# ruff: noqa: PTH100, PTH111, PTH117, PTH118 - the os.path calls mirror ComfyUI's exactly

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcache.core.errors import ConfigError

# folder_paths.map_legacy: the old folder name → the name ComfyUI uses now.
LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}
MODERN_TO_LEGACY = {modern: legacy for legacy, modern in LEGACY.items()}


def modern_folder(folder: str) -> str:
    """The folder's current ComfyUI name (``unet`` → ``diffusion_models``)."""
    return LEGACY.get(folder, folder)


def modern_ref(ref: str) -> str:
    """A ``folder/filename`` ref with a legacy folder name replaced by the current one."""
    head, sep, rest = ref.partition("/")
    return f"{modern_folder(head)}{sep}{rest}" if sep and head in LEGACY else ref


def parse_extra_model_paths(data: Any, yaml_dir: Path) -> dict[str, list[Path]]:
    """Folder → directories, read the way ComfyUI's ``load_extra_path_config`` reads them:
    sections with an optional ``base_path`` (relative to the file) and ``is_default``, each
    other key a folder whose value holds one path per line."""
    folders: dict[str, list[Path]] = {}
    if not isinstance(data, dict):
        return folders
    for section in data.values():
        if not isinstance(section, dict):
            continue
        conf = dict(section)
        base = conf.pop("base_path", None)
        conf.pop("is_default", None)
        if isinstance(base, str):
            base = os.path.expandvars(os.path.expanduser(base))
            if not os.path.isabs(base):
                base = os.path.abspath(os.path.join(yaml_dir, base))
        for folder, value in conf.items():
            for line in str(value).split("\n"):
                if not line:
                    continue
                if isinstance(base, str):
                    full = os.path.join(base, line)
                elif not os.path.isabs(line):
                    full = os.path.abspath(os.path.join(yaml_dir, line))
                else:
                    full = line
                folders.setdefault(modern_folder(str(folder)), []).append(
                    Path(os.path.normpath(full))
                )
    return folders


@dataclass(frozen=True)
class ExtraPaths:
    """Folders outside root where ComfyUI also finds models (``extra_model_paths.yaml``)."""

    folders: dict[str, list[Path]] = field(default_factory=dict)

    def find(self, folder: str, filename: str) -> Path | None:
        """The file, if one of the extra folders of ``folder`` holds it."""
        for directory in self.folders.get(modern_folder(folder), ()):
            path = directory / filename
            if path.is_file():
                return path
        return None


def load_extra_paths(files: tuple[Path, ...]) -> ExtraPaths:
    """Read every extra_model_paths file that exists.

    Raises:
        ConfigError: a file is not valid YAML.
    """
    folders: dict[str, list[Path]] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from None
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        for folder, dirs in parse_extra_model_paths(data, file.absolute().parent).items():
            folders.setdefault(folder, []).extend(dirs)
    return ExtraPaths(folders)
