"""The Typer app, its global options and the per-invocation state commands share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from cmcache import __version__
from cmcache.cli.help import HumanTyper
from cmcache.cli.output import Output
from cmcache.core.settings.load import load_settings
from cmcache.core.settings.model import Settings

app = HumanTyper(
    name="cmcache",
    help="Keep a ComfyUI model tree filled on demand: sync manifests, pull, prune, prefetch.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class AppState:
    """What the global options said, and settings loaded once on first use."""

    config: Path | None = None
    root: Path | None = None
    comfyui: Path | None = None
    out: Output = field(default_factory=Output)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """Settings from defaults ← file ← env ← flags (loaded lazily: `--help` needs none)."""
        if self._settings is None:
            self._settings = load_settings(
                config_flag=self.config, root_flag=self.root, comfyui_flag=self.comfyui
            )
        return self._settings


# The state of this invocation; main() reads it to render errors in the chosen mode.
CURRENT = AppState()


def state() -> AppState:
    """The state of this invocation."""
    return CURRENT


def _version(value: bool) -> None:
    if value:
        print(f"cmcache {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Config file (default: CMCACHE_CONFIG, then CMCACHE_HOME/config.toml).",
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", metavar="DIR", help="Model root, ComfyUI's models/ (env CMCACHE_ROOT)."
        ),
    ] = None,
    comfyui: Annotated[
        Path | None,
        typer.Option(
            "--comfyui", metavar="DIR", help="The ComfyUI install; root becomes its models/."
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and data.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="More detail; tracebacks.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Keep a ComfyUI model tree filled on demand."""
    del version
    CURRENT.config = config
    CURRENT.root = root
    CURRENT.comfyui = comfyui
    CURRENT.out = Output(
        json_mode=json_output,
        quiet=quiet,
        verbose=verbose,
        progress=not no_progress,
        command=_command_path(ctx),
    )


def _command_path(ctx: typer.Context) -> str:
    return ctx.invoked_subcommand or ""
