"""Handing one target to aria2: the resume rules, a free-space check, the download options."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from cmcache.errors import CacheError
from cmcache.fsutil import remove_quietly
from cmcache.sizes import format_size

if TYPE_CHECKING:
    from cmcache.cache.store import ModelStore
    from cmcache.results import PullOptions, Target
    from cmcache.settings import DownloadSettings


def auto_split(size: int | None) -> int:
    """Segments per file: more for larger files, where they pay off."""
    if size is None:
        return 8
    if size < 100 * 1000 * 1000:
        return 4
    if size < 1000 * 1000 * 1000:
        return 8
    return 16


def prepare_staging(target: Target) -> None:
    """Apply ARIA2.md's resume rules before aria2 sees the file.

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


def check_space(target: Target, size: int | None, store: ModelStore, min_free: int | None) -> None:
    """Refuse to start a download that cannot fit (keeping ``min_free`` free).

    Raises:
        CacheError: not enough free space on root's filesystem.
    """
    if size is None:
        return
    have = target.staging.stat().st_size if target.staging.exists() else 0
    need = max(0, size - have) + (min_free or 0)
    free = shutil.disk_usage(store.staging_dir).free
    if free < need:
        extra = f" and keep {format_size(min_free)} free (cache.min_free)" if min_free else ""
        raise CacheError(
            f"{target.entry.ref}: not enough space: it needs {format_size(size - have)}"
            f"{extra}, {format_size(free)} is free on {store.root}",
            hint="free space with `cmcache prune`, or lower cache.min_free",
            ref=target.entry.ref,
        )


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
        "split": str(opts.split or d.split or auto_split(size)),
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
