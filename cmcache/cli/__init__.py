"""Command-line interface. ``main()`` is the single place errors become exit codes."""

from __future__ import annotations

import gc
import sys
import traceback
from typing import TYPE_CHECKING

from cmcache.core.errors import CmcacheError, ExitCode

if TYPE_CHECKING:
    import typer

    from cmcache.cli.output import Output


def _build() -> typer.Typer:
    # Importing the command modules registers their commands on the app.
    from cmcache.cli import (  # noqa: F401
        cache_cmds,
        catalog_cmds,
        cluster_cmds,
        comfyui_cmds,
        comfyui_workflow_cmd,
        config_cmds,
        daemon_cmds,
        disk_cmds,
        find_cmd,
        forget_cmd,
        metrics_cmd,
        predict_cmd,
        prefetch_cmd,
        prune_cmd,
        publish_cmd,
        pull_cmd,
        queue_cmds,
        report_cmd,
        sync_cmd,
        verify_cmds,
    )
    from cmcache.cli.app import app

    return app


# Signals that end a command the way Ctrl-C does: downloads paused resumably, daemon stopped.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")
_received: list[int] = []


def _on_stop_signal(signum: int, _frame: object) -> None:
    import signal

    if _received:  # a second signal: let the cleanup of the first one finish
        return
    _received.append(signum)
    for name in _STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise KeyboardInterrupt


def _catch_stop_signals() -> None:
    """Kubernetes, systemd, `timeout` and CI runners stop jobs with SIGTERM (a closed terminal
    sends SIGHUP): treat them as Ctrl-C."""
    import signal

    for name in _STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _on_stop_signal)


def _interrupted_code() -> int:
    """130 for Ctrl-C; 128 + the signal's number for SIGTERM (143) and SIGHUP (129)."""
    return 128 + _received[0] if _received else int(ExitCode.INTERRUPTED)


def _fail(out: Output, code: int, message: str, hint: str = "", ref: str | None = None) -> int:
    from cmcache.cli.output import error_item

    if out.json_mode:
        out.emit_envelope({}, errors=[error_item(ref, code, message)], exit_code=code)
    out.error(message, hint)
    return code


def main(argv: list[str] | None = None) -> None:
    """Run cmcache and exit with its exit code (README, "Exit codes")."""
    from cmcache.cli.fast import fast_path
    from cmcache.cli.globals import hoist_global_options

    argv = hoist_global_options(sys.argv[1:] if argv is None else argv) or ["--help"]
    fast = fast_path(argv)
    if fast is not None:
        sys.exit(fast)
    import typer

    from cmcache.cli.app import CURRENT

    _catch_stop_signals()
    app = _build()
    try:
        code = app(args=argv, prog_name="cmcache", standalone_mode=False)
    except CmcacheError as exc:
        code = int(exc.exit_code)
        if code == ExitCode.INTERRUPTED:
            code = _interrupted_code()
        code = _fail(CURRENT.out, code, exc.message, exc.hint, exc.ref or None)
    except typer.TyperException as exc:  # usage errors found while parsing arguments
        code = _fail(CURRENT.out, ExitCode.USAGE, exc.format_message(), "see `cmcache --help`")
    except (typer.Abort, KeyboardInterrupt):
        code = _fail(CURRENT.out, _interrupted_code(), "interrupted")
    except Exception as exc:
        if CURRENT.out.verbose:
            traceback.print_exc()
        hint = "rerun with -v for the full traceback"
        code = _fail(CURRENT.out, ExitCode.UNEXPECTED, f"unexpected error: {exc!r}", hint)
    # Everything is said: skip collecting every object of every module on the way out
    # (measured: a third of a second on a busy machine, after each command).
    gc.freeze()
    sys.exit(int(code or 0))
