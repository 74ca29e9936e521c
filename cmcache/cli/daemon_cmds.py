"""``daemon start|stop|status``: the private aria2 daemon."""

from __future__ import annotations

from cmcache.cli.app import app, state
from cmcache.cli.help import HumanTyper

daemon_app = HumanTyper(help="The private aria2 daemon.", no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")


@daemon_app.command("start")
def daemon_start() -> None:
    """Start the private daemon and keep it running."""
    from cmcache.services.download.daemon import start_daemon

    st = state()
    info = start_daemon(st.settings())
    st.out.line(f"aria2 running: pid {info.pid}, {info.url}")
    st.out.finish({"pid": info.pid, "url": info.url, "aria2c": info.aria2c})


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop the private daemon (downloads stay resumable)."""
    from cmcache.services.download.daemon import stop_daemon

    st = state()
    stopped = stop_daemon(st.settings())
    st.out.line("stopped" if stopped else "not running")
    st.out.finish({"stopped": stopped})


@daemon_app.command("status")
def daemon_status() -> None:
    """Say whether the private daemon runs, and where."""
    from cmcache.services.download.daemon import daemon_status as read_status

    st = state()
    found = read_status(st.settings())
    info = found.info
    if info is None:
        st.out.line("not running")
        st.out.finish({"running": False})
        return
    st.out.line(
        f"running: pid {info.pid}, {info.url}, aria2 {found.version}, "
        f"{'kept' if info.keep else 'stops when idle'}"
    )
    st.out.finish(
        {
            "running": True,
            "pid": info.pid,
            "url": info.url,
            "version": found.version,
            "keep": info.keep,
            "aria2c": info.aria2c,
        }
    )
