"""Progress for pulls: rich bars on a TTY (per file and total), one line per finished file."""

from __future__ import annotations

import os
import time
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

from cmcache.core.sizes import format_size
from cmcache.core.states import ProgressState, PullOutcome

if TYPE_CHECKING:
    from types import TracebackType

    from cmcache.cli.output import Output
    from cmcache.core.targets import Outcome, PullHooks
    from cmcache.core.targets import Progress as Snapshot


def outcome_line(outcome: Outcome) -> str:
    """One line per file: what happened, how much, how fast."""
    ref = outcome.target.entry.ref
    if outcome.outcome == PullOutcome.DOWNLOADED:
        rate = outcome.bytes / outcome.seconds if outcome.seconds > 0 else 0
        return (
            f"downloaded {ref} ({format_size(outcome.bytes)} in {outcome.seconds:.1f}s, "
            f"{format_size(int(rate))}/s)"
        )
    if outcome.outcome == PullOutcome.FAILED:
        return f"failed {ref}: {outcome.message}"
    if outcome.outcome == PullOutcome.PLANNED:
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
        self._plain_at = time.monotonic()
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

    def hooks(self) -> PullHooks:
        """The callbacks a pull reports through."""
        from cmcache.core.targets import PullHooks

        return PullHooks(on_progress=self.update, on_note=self.note, on_outcome=self.outcome)

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
        if outcome.outcome == PullOutcome.FAILED:
            self.out.error(outcome.message)
        elif self.show_outcomes and self._bars is not None and self.out.stdout_is_tty:
            # Same terminal: print above the live bars, or they leave stale copies behind.
            self._bars.console.print(escape(outcome_line(outcome)), highlight=False)
        elif self.show_outcomes:
            self.out.line(outcome_line(outcome))

    def update(self, snapshot: list[Snapshot]) -> None:
        """Redraw the bars from the downloader's latest snapshot (off a terminal: a plain line
        at most every ``plain_interval`` seconds)."""
        if self._bars is None:
            self._plain_line(snapshot)
            return
        if self._total is None:
            self._total = self._bars.add_task("[bold]total", total=None)
        for item in snapshot:
            if item.state in (ProgressState.DONE, ProgressState.FAILED):
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

    def _plain_line(self, snapshot: list[Snapshot]) -> None:
        if not self.out.show_plain_progress:
            return
        now = time.monotonic()
        if now - self._plain_at < plain_interval():
            return
        self._plain_at = now
        busy = [i for i in snapshot if i.state not in (ProgressState.DONE, ProgressState.FAILED)]
        if not busy:
            return
        done = sum(i.done for i in busy)
        total = sum(i.total for i in busy)
        speed = sum(i.speed for i in busy)
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        eta = f", {max(0, total - done) / speed:.0f}s left" if speed and total else ""
        files = f"{len(busy)} file{'' if len(busy) == 1 else 's'}"
        if all(i.state == ProgressState.VERIFYING for i in busy):
            what = f"hashing {busy[0].ref if len(busy) == 1 else files}"
        else:
            what = f"downloading {files}"
        self.out.info(
            f"{what}: {format_size(done)} of {format_size(total or None)}{pct}, "
            f"{format_size(speed)}/s{eta}"
        )


def plain_interval() -> float:
    """Seconds between plain progress lines (env ``CMCACHE_PROGRESS_INTERVAL``, default 10)."""
    try:
        return max(0.5, float(os.environ.get("CMCACHE_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0
