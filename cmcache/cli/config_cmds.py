"""``config init|show|path|set``."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import tomli_w
import typer

from cmcache.cli.app import app, state
from cmcache.errors import ConfigError
from cmcache.fsutil import write_atomic
from cmcache.settings import (
    DEFAULTS,
    masked,
    merge,
    read_config_file,
    resolve_paths,
    set_value,
    validate,
)
from cmcache.settings import layered_config as _layered

config_app = typer.Typer(help="Create, show and change the config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("path")
def config_path() -> None:
    """Print the config file's path."""
    st = state()
    path = resolve_paths(st.config).config_file
    st.out.line(str(path))
    st.out.finish({"path": str(path), "exists": path.exists()})


@config_app.command("init")
def config_init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config."""
    st = state()
    path = resolve_paths(st.config).config_file
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="use --force to overwrite it")
    template = resources.files("cmcache").joinpath("data/config.toml").read_bytes()
    write_atomic(path, template, mode=0o600)
    st.out.info(f"wrote {path}")
    st.out.line(str(path))
    st.out.finish({"path": str(path)})


@config_app.command("show")
def config_show() -> None:
    """Print the effective config (file, environment, flags); secrets masked."""
    st = state()
    paths, layered = _layered(config_flag=st.config, root_flag=st.root)
    settings = st.settings()
    effective = merge(DEFAULTS, layered)
    effective["cache"] = {**effective["cache"], "root": str(settings.cache.root)}
    shown = masked(effective)
    st.out.line(tomli_w.dumps(shown).rstrip())
    st.out.finish({"path": str(paths.config_file), "config": shown})


@config_app.command("set")
def config_set(
    key: Annotated[str, typer.Argument(help="section.key, e.g. cache.max_size.")],
    value: Annotated[str, typer.Argument(help="A TOML value; bare words are strings.")],
) -> None:
    """Set one key in the config file (the file is rewritten; comments are not kept)."""
    st = state()
    paths = resolve_paths(st.config)
    raw = read_config_file(paths.config_file)
    updated = set_value(raw, key, value)
    validate(updated, f"{key} = {value}", paths)
    write_atomic(paths.config_file, tomli_w.dumps(updated).encode(), mode=0o600)
    st.out.info(f"set {key} in {paths.config_file}")
    st.out.finish({"path": str(paths.config_file), "key": key})
