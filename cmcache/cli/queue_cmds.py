"""``status``, ``pause``, ``resume`` and ``cancel``: the download queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.core.sizes import format_size
from cmcache.core.targets import PullHooks

if TYPE_CHECKING:
    from cmcache.services.download.queue import QueueReport

IdsArg = Annotated[
    list[str] | None, typer.Argument(metavar="ID…", help="Download ids (from status) or refs.")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every queued download.")]


WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch",
        help="Show it again each second it changes; end 5 s after the last download stops "
        "(with --json: one document per line).",
    ),
]


@app.command()
def status(watch: WatchOpt = False) -> None:
    """Show queued, active, paused and failed downloads."""
    from cmcache.cli.progress import PullProgress, outcome_line
    from cmcache.services.cache.store import open_cache_for_reading
    from cmcache.services.download.queue import queue_report, watch_queue

    st = state()
    settings = st.settings()
    cache = open_cache_for_reading(settings)
    if watch:
        with cache:
            last = None
            for report in watch_queue(settings, cache, PullHooks()):
                data = _status_data(report, settings.cache.max_size)
                if data != last:
                    _render(report, settings.cache.max_size, data)
                    if st.out.json_mode:
                        st.out.emit_envelope(data)
                    last = data
        return
    with cache, PullProgress(st.out, show_outcomes=False) as progress:
        report = queue_report(settings, cache, progress.hooks())
    for outcome in report.placed:
        st.out.info(outcome_line(outcome))
    st.out.finish(_render(report, settings.cache.max_size))


def _status_data(report: QueueReport, budget: int | None) -> dict[str, Any]:
    return {
        "daemon": "running" if report.daemon_running else "not running",
        "cache": {"managed_size": report.managed_size, "files": report.files, "max_size": budget},
        "downloads": [
            {
                "id": e.id,
                "ref": e.ref,
                "state": str(e.state),
                "priority": e.priority,
                "done": e.done,
                "total": e.total,
                "speed": e.speed,
                "eta": e.eta,
                "message": e.message,
            }
            for e in report.entries
        ],
    }


def _render(
    report: QueueReport, budget: int | None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Print one report (a JSON line when watching with --json); returns its data."""
    st = state()
    data = data if data is not None else _status_data(report, budget)
    files = f"{report.files} managed file{'' if report.files == 1 else 's'}"
    st.out.info(
        f"cache: {files}, {format_size(report.managed_size)}"
        + (f" of {format_size(budget)} budget" if budget else " (no max_size)")
    )
    rows = []
    for e in report.entries:
        pct = f"{100 * e.done / e.total:.0f}%" if e.total else "-"
        eta = f"{e.eta:.0f}s" if e.eta is not None else "-"
        rows.append([e.id, e.ref, str(e.state), pct, f"{format_size(e.speed)}/s", eta, e.message])
    st.out.table(
        ["id", "ref", "state", "progress", "speed", "eta", "note"],
        rows,
        title=f"{len(report.entries)} downloads",
    )
    if not report.entries:
        st.out.info("no downloads queued")
    return data


def _act(action: str, ids: list[str] | None, everything: bool) -> None:
    from cmcache.services.cache.store import open_cache
    from cmcache.services.download.queue import act_on_jobs

    st = state()
    settings = st.settings()
    with open_cache(settings) as cache:
        done = act_on_jobs(settings, cache, action, ids or [], everything)
    if not done:
        st.out.info("no queued downloads")
    past = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]
    for ref in done:
        st.out.line(f"{past} {ref}")
    st.out.finish({past: done})


@app.command()
def pause(ids: IdsArg = None, all_: AllOpt = False) -> None:
    """Pause downloads; they keep their progress."""
    _act("pause", ids, all_)


@app.command()
def resume(ids: IdsArg = None, all_: AllOpt = False) -> None:
    """Resume paused downloads."""
    _act("resume", ids, all_)


@app.command()
def cancel(ids: IdsArg = None, all_: AllOpt = False) -> None:
    """Cancel downloads and delete their partial files."""
    _act("cancel", ids, all_)
