"""Handing one target to aria2: its resume rules (docs/aria2.md) and the download options."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cmcache.adapters.aria2.control import read_partial
from cmcache.core.files import remove_quietly
from cmcache.core.planning.split import auto_split, resume_split

if TYPE_CHECKING:
    from cmcache.core.settings.model import DownloadSettings
    from cmcache.core.targets import PullOptions, Target


def prepare_staging(target: Target) -> None:
    """Apply aria2's resume rules (docs/aria2.md) before aria2 sees the file.

    A 0-byte control file, or bytes with no control file to vouch for them, mean starting
    over (``continue`` on them reports "complete" with wrong bytes); a control file without
    its data is dropped.
    """
    staging, control = target.staging, target.control
    control_size = control.stat().st_size if control.exists() else None
    if control_size == 0 or (control_size is None and staging.exists()):
        remove_quietly(staging, control)
    elif control_size is not None and not staging.exists():
        remove_quietly(control)


def segments(target: Target, d: DownloadSettings, opts: PullOptions, size: int | None) -> int:
    """How many segments to fetch ``target`` in; when resuming, no more than the stretches its
    control file says are still missing (aria2 would cut running segments and fetch twice
    the bytes in flight past each cut)."""
    split = opts.split or d.split or auto_split(size)
    partial = read_partial(target.control)
    return split if partial is None else resume_split(split, partial.unfinished_runs)


def aria2_options(
    target: Target, d: DownloadSettings, opts: PullOptions, size: int | None, header: str | None
) -> dict[str, str]:
    """aria2 options for one download; every value a string (aria2 ignores other types)."""
    options = {
        "dir": str(target.staging.parent),
        "out": target.staging.name,
        # Resume only what a control file vouches for; prepare_staging removed the rest.
        "continue": "true" if target.control.exists() else "false",
        "allow-overwrite": "true",
        "auto-file-renaming": "false",
        "split": str(segments(target, d, opts, size)),
        "max-connection-per-server": str(d.max_connection_per_server),
        "min-split-size": "1M",
        "max-tries": str(d.max_tries),
        "retry-wait": str(d.retry_wait),
        "timeout": str(d.timeout),
        "max-download-limit": str(opts.max_speed or d.max_speed),
    }
    if header:
        options["header"] = header
    return options
