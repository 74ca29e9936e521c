"""``config init|show|path|set``."""

from __future__ import annotations

from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.cli.help import HumanTyper
from cmcache.core.settings.load import resolve_paths
from cmcache.services.config import init_config, set_config, show_config

config_app = HumanTyper(help="Create, show and change the config file.", no_args_is_help=True)
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
    init_config(path, force=force)
    st.out.info(f"wrote {path}")
    st.out.line(str(path))
    st.out.finish({"path": str(path)})


@config_app.command("show")
def config_show() -> None:
    """Print the effective config (file, environment, flags); secrets masked."""
    import tomli_w

    st = state()
    shown = show_config(st.config, st.root, st.comfyui, st.settings().cache.root)
    st.out.line(tomli_w.dumps(shown.values).rstrip())
    st.out.finish({"path": str(shown.path), "config": shown.values})


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    key: Annotated[str, typer.Argument(metavar="KEY", help="section.key, e.g. cache.max_size.")],
    value: Annotated[
        str, typer.Argument(metavar="VALUE", help="A TOML value; bare words are strings.")
    ],
) -> None:
    """Set one key in the config file, keeping its comments."""
    st = state()
    paths = resolve_paths(st.config)
    set_config(paths, key, value)
    st.out.info(f"set {key} in {paths.config_file}")
    st.out.finish({"path": str(paths.config_file), "key": key})
