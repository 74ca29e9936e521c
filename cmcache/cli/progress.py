"""Progress for pulls: rich bars on a TTY (per file and total), one line per finished file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cmcache.sizes import format_size

if TYPE_CHECKING:
    from types import TracebackType

    from cmcache.cli.output import Output
    from cmcache.results import Outcome
    from cmcache.results import Progress as Snapshot


def outcome_line(outcome: Outcome) -> str:
    """One line per file: what happened, how much, how fast."""
    ref = outcome.target.entry.ref
    if outcome.outcome == "downloaded":
        rate = outcome.bytes / outcome.seconds if outcome.seconds > 0 else 0
        return (
            f"downloaded {ref} ({format_size(outcome.bytes)} in {outcome.seconds:.1f}s, "
            f"{format_size(int(rate))}/s)"
        )
    if outcome.outcome == "failed":
        return f"failed {ref}: {outcome.message}"
    if outcome.outcome == "planned":
        return f"would download {ref} → {outcome.target.final}"
    return f"{outcome.outcome} {ref}"


class PullProgress:
    """Context manager wiring the downloader's callbacks to the terminal."""

    def __init__(self, out: Output, *, show_outcomes: bool = True) -> None:
        self.out = out
        self.show_outcomes = show_outcomes
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._total: TaskID | None = None
        if out.show_progress:
            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=out.stderr_console,
                transient=True,
            )

    def __enter__(self) -> PullProgress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bars is not None:
            self._bars.stop()

    def note(self, text: str) -> None:
        """A remark from the downloader (retries, resumes) on stderr."""
        if self._bars is not None:
            self._bars.console.print(f"[dim]{escape(text)}[/]")
        else:
            self.out.info(text)

    def outcome(self, outcome: Outcome) -> None:
        """A file finished: one line of data on stdout."""
        if self._bars is not None and outcome.target.entry.ref in self._tasks:
            self._bars.remove_task(self._tasks.pop(outcome.target.entry.ref))
        if outcome.outcome == "failed":
            self.out.error(outcome.message)
        elif self.show_outcomes and self._bars is not None and self.out.stdout_is_tty:
            # Same terminal: print above the live bars, or they leave stale copies behind.
            self._bars.console.print(escape(outcome_line(outcome)), highlight=False)
        elif self.show_outcomes:
            self.out.line(outcome_line(outcome))

    def update(self, snapshot: list[Snapshot]) -> None:
        """Redraw the bars from the downloader's latest snapshot."""
        if self._bars is None:
            return
        if self._total is None:
            self._total = self._bars.add_task("[bold]total", total=None)
        for item in snapshot:
            if item.state in ("done", "failed"):
                continue
            label = f"{escape(item.ref)} [dim]{item.state}[/]"
            if item.ref not in self._tasks:
                self._tasks[item.ref] = self._bars.add_task(label, total=item.total or None)
            self._bars.update(
                self._tasks[item.ref],
                description=label,
                completed=item.done,
                total=item.total or None,
            )
        done = sum(i.done for i in snapshot)
        total = sum(i.total for i in snapshot)
        self._bars.update(self._total, completed=done, total=total or None)
