"""Rendering: rich tables on a TTY, plain lines otherwise, one JSON document with --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cmcache.core.errors import ExitCode


@dataclass
class Output:
    """Where a command's data, progress and errors go."""

    json_mode: bool = False
    quiet: bool = False
    verbose: bool = False
    progress: bool = True
    command: str = ""
    _stdout: Console = field(init=False, repr=False)
    _stderr: Console = field(init=False, repr=False)

    def __post_init__(self) -> None:
        no_color = bool(os.environ.get("NO_COLOR"))
        self._stdout = Console(highlight=False, soft_wrap=True, no_color=no_color)
        self._stderr = Console(stderr=True, highlight=False, soft_wrap=True, no_color=no_color)

    @property
    def stdout_is_tty(self) -> bool:
        """Whether data goes to a person (tables) or to a pipe (plain lines)."""
        return sys.stdout.isatty()

    @property
    def show_progress(self) -> bool:
        """Progress bars only for a person watching stderr, never with --json."""
        return self.progress and not self.json_mode and not self.quiet and sys.stderr.isatty()

    @property
    def show_plain_progress(self) -> bool:
        """Plain progress lines for a log (stderr not a terminal); never with -q or --json."""
        return self.progress and not self.json_mode and not self.quiet and not sys.stderr.isatty()

    @property
    def stderr_console(self) -> Console:
        """The console progress bars draw on."""
        return self._stderr

    # ------------------------------------------------------------ data on stdout

    def line(self, text: str = "") -> None:
        """One line of data (suppressed with --json)."""
        if not self.json_mode:
            self._stdout.print(escape(text))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> None:
        """A table on a TTY, tab-separated lines in a pipe; nothing with --json."""
        if self.json_mode:
            return
        if self.stdout_is_tty:
            table = Table(title=title or None, show_edge=False, header_style="bold")
            for at, column in enumerate(columns):
                if column == "ref":  # the column people copy: never cut, others shrink first
                    longest = max((len(row[at]) for row in rows), default=len(column))
                    table.add_column(column, no_wrap=True, min_width=longest)
                else:
                    table.add_column(column, overflow="ellipsis", no_wrap=True)
            for row in rows:
                table.add_row(*(escape(c) for c in row))
            self._stdout.print(table)
        else:
            for row in rows:
                sys.stdout.write("\t".join(row) + "\n")

    # ------------------------------------------------------------ messages on stderr

    def info(self, text: str) -> None:
        """A note for people; hidden by -q and --json."""
        if not self.quiet and not self.json_mode:
            self._stderr.print(escape(text))

    def warn(self, text: str) -> None:
        """A warning; shown unless -q (with --json it goes to stderr too)."""
        if not self.quiet:
            self._stderr.print(f"[yellow]warning:[/] {escape(text)}")

    def error(self, text: str, hint: str = "") -> None:
        """An error line and its hint, on stderr."""
        self._stderr.print(f"[bold red]error:[/] {escape(text)}")
        if hint:
            self._stderr.print(f"[dim]hint:[/] {escape(hint)}")

    # ------------------------------------------------------------ the end of a command

    def finish(
        self,
        data: dict[str, Any],
        *,
        errors: Sequence[dict[str, Any]] = (),
        exit_code: int = 0,
        partial: bool | None = None,
    ) -> None:
        """Print the JSON envelope (with --json) and exit with ``exit_code``."""
        if self.json_mode:
            self.emit_envelope(data, errors=errors, exit_code=exit_code, partial=partial)
        if exit_code:
            raise typer.Exit(exit_code)

    def emit_envelope(
        self,
        data: dict[str, Any],
        *,
        errors: Sequence[dict[str, Any]] = (),
        exit_code: int = 0,
        partial: bool | None = None,
    ) -> None:
        """Write exactly one JSON document on stdout (README, "Exit codes")."""
        if exit_code == 0:
            status = "ok"
        elif partial is None:
            status = "error"
        else:
            status = "partial" if partial else "error"
        envelope = {
            "command": self.command,
            "status": status,
            "exit_code": int(exit_code),
            "data": data,
            "errors": list(errors),
        }
        sys.stdout.write(json.dumps(envelope, indent=None, default=str) + "\n")
        sys.stdout.flush()


def error_item(ref: str | None, code: int | ExitCode, message: str) -> dict[str, Any]:
    """One element of the envelope's ``errors``; ``ref`` is None (``null``) for an error of the
    whole command, never an empty string."""
    return {"ref": ref or None, "code": int(code), "message": message}
