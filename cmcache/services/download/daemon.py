"""The private aria2 daemon as `cmcache daemon` manages it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.adapters.aria2.client import Aria2Engine
from cmcache.adapters.aria2.daemon import DaemonInfo, PrivateDaemon
from cmcache.core.errors import UsageError

if TYPE_CHECKING:
    from cmcache.core.settings.model import Settings


def private_daemon(settings: Settings) -> PrivateDaemon:
    """cmcache's own daemon.

    Raises:
        UsageError: ``download.rpc`` names an external daemon, which cmcache does not manage.
    """
    if settings.download.rpc:
        raise UsageError("download.rpc names an external aria2; cmcache does not manage it")
    return PrivateDaemon(settings.paths.state_dir, settings.download)


def start_daemon(settings: Settings) -> DaemonInfo:
    """Start the private daemon (or find it) and keep it running."""
    return private_daemon(settings).ensure(keep=True)


def stop_daemon(settings: Settings) -> bool:
    """Stop the private daemon; True if it was running."""
    return private_daemon(settings).stop()


@dataclass(frozen=True)
class DaemonStatus:
    """The private daemon, if it runs."""

    info: DaemonInfo | None
    version: str = ""


def daemon_status(settings: Settings) -> DaemonStatus:
    """Whether the private daemon runs, and which aria2 it is."""
    info = private_daemon(settings).info()
    if info is None:
        return DaemonStatus(None)
    return DaemonStatus(info, Aria2Engine(info.url, info.secret).version())
