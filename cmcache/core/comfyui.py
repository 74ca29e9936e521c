"""ComfyUI's model folders as ComfyUI itself sees them: legacy names and extra model paths.

Mirrors ComfyUI's ``folder_paths.map_legacy`` and ``utils/extra_config.py`` so that cmcache and
ComfyUI agree on where a model is.
"""

# ruff: noqa: PTH100, PTH111, PTH117, PTH118 - the os.path calls mirror ComfyUI's exactly

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmcache.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

# folder_paths.map_legacy: the old folder name → the name ComfyUI uses now.
LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}
MODERN_TO_LEGACY = {modern: legacy for legacy, modern in LEGACY.items()}
# ComfyUI-Manager's key in an extra-paths section: where new downloads go, not a model folder.
DOWNLOAD_BASE_KEY = "download_model_base"
DESKTOP_YAML = "extra_models_config.yaml"


def desktop_config_dir(environ: Mapping[str, str], platform: str) -> Path | None:
    """ComfyUI Desktop's settings folder (Electron's userData for the app "ComfyUI")."""
    if platform == "win32":
        appdata = environ.get("APPDATA")
        return Path(appdata) / "ComfyUI" if appdata else None
    home = environ.get("HOME")
    if platform == "darwin":
        return Path(home) / "Library" / "Application Support" / "ComfyUI" if home else None
    xdg = environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "ComfyUI"
    return Path(home) / ".config" / "ComfyUI" if home else None


def modern_folder(folder: str) -> str:
    """The folder's current ComfyUI name (``unet`` → ``diffusion_models``)."""
    return LEGACY.get(folder, folder)


def modern_ref(ref: str) -> str:
    """A ``folder/filename`` ref with a legacy folder name replaced by the current one."""
    head, sep, rest = ref.partition("/")
    return f"{modern_folder(head)}{sep}{rest}" if sep and head in LEGACY else ref


def _sections(data: Any, yaml_dir: Path) -> list[tuple[dict[str, Any], str | None]]:
    """Each section of an extra-paths file with its ``base_path`` made absolute."""
    out: list[tuple[dict[str, Any], str | None]] = []
    if not isinstance(data, dict):
        return out
    for section in data.values():
        if not isinstance(section, dict):
            continue
        conf = dict(section)
        base = conf.pop("base_path", None)
        if isinstance(base, str):
            base = os.path.expandvars(os.path.expanduser(base))
            if not os.path.isabs(base):
                base = os.path.abspath(os.path.join(yaml_dir, base))
        out.append((conf, base if isinstance(base, str) else None))
    return out


def _full(line: str, base: str | None, yaml_dir: Path) -> Path:
    if base is not None:
        full = os.path.join(base, line)
    elif not os.path.isabs(line):
        full = os.path.abspath(os.path.join(yaml_dir, line))
    else:
        full = line
    return Path(os.path.normpath(full))


def parse_extra_model_paths(data: Any, yaml_dir: Path) -> dict[str, list[Path]]:
    """Folder → directories, read the way ComfyUI's ``load_extra_path_config`` reads them:
    sections with an optional ``base_path`` (relative to the file) and ``is_default``, each
    other key a folder whose value holds one path per line."""
    folders: dict[str, list[Path]] = {}
    for conf, base in _sections(data, yaml_dir):
        for folder, value in conf.items():
            if folder in ("is_default", DOWNLOAD_BASE_KEY):
                continue
            for line in str(value).split("\n"):
                if line:
                    folders.setdefault(modern_folder(str(folder)), []).append(
                        _full(line, base, yaml_dir)
                    )
    return folders


def parse_download_base(data: Any, yaml_dir: Path) -> Path | None:
    """ComfyUI-Manager's ``download_model_base`` (where it puts new models): from the section
    marked ``is_default`` when one has it, else from the first that has it."""
    found: list[tuple[bool, Path]] = []
    for conf, base in _sections(data, yaml_dir):
        value = conf.get(DOWNLOAD_BASE_KEY)
        if isinstance(value, str) and value.strip():
            found.append((bool(conf.get("is_default")), _full(value.strip(), base, yaml_dir)))
    ordered = [path for is_default, path in found if is_default] + [path for _, path in found]
    return ordered[0] if ordered else None


@dataclass(frozen=True)
class ExtraPaths:
    """Folders outside root where ComfyUI also finds models (``extra_model_paths.yaml``)."""

    folders: dict[str, list[Path]] = field(default_factory=dict)
    download_base: Path | None = None  # ComfyUI-Manager's download_model_base, if one says

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
    download_base = None
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from None
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        here = file.absolute().parent
        for folder, dirs in parse_extra_model_paths(data, here).items():
            folders.setdefault(folder, []).extend(dirs)
        download_base = download_base or parse_download_base(data, here)
    return ExtraPaths(folders, download_base)
