"""The config file: write a starter, show the effective values, set one key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cmcache.core.errors import ConfigError
from cmcache.core.files import write_atomic
from cmcache.core.settings.edit import masked, set_in_document, starter_config
from cmcache.core.settings.load import layered_config, merge, parse_toml, validate
from cmcache.core.settings.schema import DEFAULTS

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.core.settings.model import Paths

# The file may hold tokens: only its owner reads it.
CONFIG_MODE = 0o600


def init_config(path: Path, *, force: bool) -> None:
    """Write the commented starter config.

    Raises:
        ConfigError: the file exists and ``force`` is off.
    """
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="use --force to overwrite it")
    write_atomic(path, starter_config().encode(), mode=CONFIG_MODE)


@dataclass(frozen=True)
class ShownConfig:
    """The effective config, secrets masked."""

    path: Path
    values: dict[str, Any]


def show_config(
    config_flag: Path | None, root_flag: Path | None, comfyui_flag: Path | None, root: Path
) -> ShownConfig:
    """Defaults ← file ← environment ← flags, with the resolved root; secrets masked."""
    paths, layered = layered_config(
        config_flag=config_flag, root_flag=root_flag, comfyui_flag=comfyui_flag
    )
    effective = merge(DEFAULTS, layered)
    effective["cache"] = {**effective["cache"], "root": str(root)}
    return ShownConfig(paths.config_file, masked(effective))


def set_config(paths: Paths, key: str, text: str) -> None:
    """Set one key in the config file, keeping its comments; refused if the result is invalid."""
    path = paths.config_file
    try:
        document = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        document = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    parse_toml(document, str(path))  # a syntax error names file, line and column first
    updated = set_in_document(document, key, text)
    validate(parse_toml(updated, str(path)), f"{key} = {text}", paths)
    write_atomic(path, updated.encode(), mode=CONFIG_MODE)
