"""Rendering: rich tables on a TTY, plain lines otherwise, one JSON document with --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import typer

from cmcache.core.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Output:
    """Where a command's data, progress and errors go."""

    json_mode: bool = False
    quiet: bool = False
    verbose: bool = False
    progress: bool = True
    command: str = ""

    # Rich is loaded on the first line a person is shown: a --json command that prints no note
    # never pays its import (~0.05 s of CPU, and the test suite starts thousands of commands).
    @cached_property
    def _stdout(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")))

    @cached_property
    def _stderr(self) -> Console:
        from rich.console import Console

        no_color = bool(os.environ.get("NO_COLOR"))
        return Console(stderr=True, highlight=False, soft_wrap=True, no_color=no_color)

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
            self._stdout.print(_escape(text))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> None:
        """A table on a TTY, tab-separated lines in a pipe; nothing with --json."""
        if self.json_mode:
            return
        if self.stdout_is_tty:
            from rich.table import Table

            table = Table(title=title or None, show_edge=False, header_style="bold")
            for at, column in enumerate(columns):
                if column == "ref":  # the column people copy: never cut, others shrink first
                    longest = max((len(row[at]) for row in rows), default=len(column))
                    table.add_column(column, no_wrap=True, min_width=longest)
                else:
                    table.add_column(column, overflow="ellipsis", no_wrap=True)
            for row in rows:
                table.add_row(*(_escape(c) for c in row))
            self._stdout.print(table)
        else:
            for row in rows:
                sys.stdout.write("\t".join(row) + "\n")

    # ------------------------------------------------------------ messages on stderr

    def info(self, text: str) -> None:
        """A note for people; hidden by -q and --json."""
        if not self.quiet and not self.json_mode:
            self._stderr.print(_escape(text))

    def warn(self, text: str) -> None:
        """A warning; shown unless -q (with --json it goes to stderr too)."""
        if not self.quiet:
            self._stderr.print(f"[yellow]warning:[/] {_escape(text)}")

    def error(self, text: str, hint: str = "") -> None:
        """An error line and its hint, on stderr."""
        self._stderr.print(f"[bold red]error:[/] {_escape(text)}")
        if hint:
            self._stderr.print(f"[dim]hint:[/] {_escape(hint)}")

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


def _escape(text: str) -> str:
    """``text`` with rich's markup characters escaped."""
    from rich.markup import escape

    return escape(text)
