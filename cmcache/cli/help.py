"""Help that a person reads: arguments by their metavar (``REF…``), never Python types.

Typer shows an argument as ``refs... <list[str]>`` and a required one in the usage line as
``{ref}``; every command here is built with ``HumanCommand`` instead, and every option names
its value (``FILE``, ``N``, ``SIZE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from collections.abc import Callable

    from typer._click import Context, HelpFormatter, Parameter


def _argument_name(param: Parameter) -> str:
    """``REF`` or ``REF…``: the metavar (else the name in capitals), "…" when it repeats."""
    name = param.metavar or (param.name or "").upper()
    if param.nargs != 1 and not name.endswith("…"):
        name += "…"
    return name


class HumanCommand(TyperCommand):
    """A command whose usage line and help show arguments as ``REF…``, without types."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        """``[OPTIONS] REF [MORE…]``: optional arguments in brackets, required ones bare."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The arguments (name and help), then the options as Typer writes them."""
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), str(getattr(param, "help", "") or "")))
            elif param.param_type_name == "option":
                record = param.get_help_record(ctx)
                if record is not None:
                    options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class HumanTyper(typer.Typer):
    """A Typer app whose commands are ``HumanCommand``s."""

    def command(  # type: ignore[override]
        self, name: str | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a command, built as a ``HumanCommand`` unless told otherwise."""
        kwargs.setdefault("cls", HumanCommand)
        return super().command(name, **kwargs)
