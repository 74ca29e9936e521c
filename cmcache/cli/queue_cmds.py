"""``status``, ``pause``, ``resume``, ``cancel`` and ``daemon``: the download queue."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.errors import UsageError
from cmcache.sizes import format_size

IdsArg = Annotated[list[str] | None, typer.Argument(help="Download ids (from status) or refs.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every queued download.")]


def _open(start: bool = False) -> tuple[Any, Any]:
    from cmcache.cli.common import open_cache
    from cmcache.engine.link import EngineLink

    settings = state().settings()
    _store, index = open_cache(settings)
    link = EngineLink(settings)
    if start:
        link.engines()
        return index, link
    return index, link if link.attach() else None


@app.command()
def status() -> None:
    """Show queued, active, paused and failed downloads."""
    from cmcache.queue import queue_status

    st = state()
    index, link = _open()
    if link is not None:
        _place_finished(index, link)
    entries = queue_status(index, link)
    budget = st.settings().cache.max_size
    files, size = index.usage()
    usage = {"managed_size": size, "files": files, "max_size": budget}
    st.out.info(
        f"cache: {usage['files']} managed files, {format_size(usage['managed_size'])}"
        + (f" of {format_size(budget)} budget" if budget else " (no max_size)")
    )
    rows = []
    for e in entries:
        pct = f"{100 * e.done / e.total:.0f}%" if e.total else "-"
        eta = f"{e.eta:.0f}s" if e.eta is not None else "-"
        rows.append([e.id, e.ref, e.state, pct, f"{format_size(e.speed)}/s", eta, e.message])
    st.out.table(
        ["id", "ref", "state", "progress", "speed", "eta", "note"],
        rows,
        title=f"{len(entries)} downloads",
    )
    if not entries:
        st.out.info("no downloads queued")
    daemon = "running" if link is not None else "not running"
    st.out.finish(
        {
            "daemon": daemon,
            "cache": usage,
            "downloads": [
                {
                    "id": e.id,
                    "ref": e.ref,
                    "state": e.state,
                    "priority": e.priority,
                    "done": e.done,
                    "total": e.total,
                    "speed": e.speed,
                    "eta": e.eta,
                    "message": e.message,
                }
                for e in entries
            ],
        }
    )


def _place_finished(index: Any, link: Any) -> None:
    """Verify and place downloads that finished while nobody watched (``pull --detach``)."""
    from cmcache.cache.store import ModelStore
    from cmcache.cli.common import downloader
    from cmcache.cli.progress import outcome_line
    from cmcache.queue import finished_targets
    from cmcache.results import PullOptions

    st = state()
    settings = st.settings()
    store = ModelStore(settings.cache.root)
    targets = finished_targets(index, link, store)
    if not targets:
        return
    for outcome in downloader(settings, store, index, link).run(targets, PullOptions()):
        st.out.info(outcome_line(outcome))


def _act(action: str, ids: list[str] | None, everything: bool) -> None:
    from cmcache.queue import cancel_jobs, pause_jobs, resume_jobs, select_jobs

    if not ids and not everything:
        raise UsageError(
            f"name downloads to {action} (ids or refs from `cmcache status`), or --all"
        )
    st = state()
    index, link = _open(start=action == "resume")
    jobs = select_jobs(index, ids or [], everything)
    if not jobs:
        st.out.info("no queued downloads")
        done: list[str] = []
    elif action == "cancel":
        done = cancel_jobs(link, index, jobs)
    elif link is None:
        raise UsageError(f"nothing to {action}: the download daemon is not running")
    elif action == "pause":
        done = pause_jobs(link, jobs)
    else:
        done = resume_jobs(link, index, jobs)
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


daemon_app = typer.Typer(help="The private aria2 daemon.", no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")


def _private() -> Any:
    from cmcache.engine.daemon import PrivateDaemon

    settings = state().settings()
    if settings.download.rpc:
        raise UsageError("download.rpc names an external aria2; cmcache does not manage it")
    return PrivateDaemon(settings.paths.state_dir, settings.download)


@daemon_app.command("start")
def daemon_start() -> None:
    """Start the private daemon and keep it running."""
    st = state()
    info = _private().ensure(keep=True)
    st.out.line(f"aria2 running: pid {info.pid}, {info.url}")
    st.out.finish({"pid": info.pid, "url": info.url, "aria2c": info.aria2c})


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop the private daemon (downloads stay resumable)."""
    st = state()
    stopped = _private().stop()
    st.out.line("stopped" if stopped else "not running")
    st.out.finish({"stopped": stopped})


@daemon_app.command("status")
def daemon_status() -> None:
    """Say whether the private daemon runs, and where."""
    from cmcache.engine.aria2 import Aria2Engine

    st = state()
    info = _private().info()
    if info is None:
        st.out.line("not running")
        st.out.finish({"running": False})
        return
    version = Aria2Engine(info.url, info.secret).version()
    st.out.line(
        f"running: pid {info.pid}, {info.url}, aria2 {version}, "
        f"{'kept' if info.keep else 'stops when idle'}"
    )
    st.out.finish(
        {
            "running": True,
            "pid": info.pid,
            "url": info.url,
            "version": version,
            "keep": info.keep,
            "aria2c": info.aria2c,
        }
    )
