"""Command-line interface. ``main()`` is the single place errors become exit codes."""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING

from cmcache.errors import CmcacheError, ExitCode

if TYPE_CHECKING:
    import typer


def _build() -> typer.Typer:
    # Importing the command modules registers their commands on the app.
    from cmcache.cli import (  # noqa: F401
        cache_cmds,
        catalog_cmds,
        config_cmds,
        prune_cmds,
        pull_cmd,
        queue_cmds,
        sync_cmd,
    )
    from cmcache.cli.app import app

    return app


def main(argv: list[str] | None = None) -> None:
    """Run cmcache and exit with the code of SPEC §8."""
    from cmcache.cli.fast import fast_path

    fast = fast_path(sys.argv[1:] if argv is None else argv)
    if fast is not None:
        sys.exit(fast)
    import typer

    from cmcache.cli.app import CURRENT
    from cmcache.cli.output import error_item

    app = _build()
    out = CURRENT.out
    try:
        code = app(args=argv, prog_name="cmcache", standalone_mode=False)
    except CmcacheError as exc:
        out = CURRENT.out
        if out.json_mode:
            out.emit_envelope(
                {},
                errors=[error_item(exc.ref, exc.exit_code, exc.message)],
                exit_code=exc.exit_code,
            )
        out.error(exc.message, exc.hint)
        code = int(exc.exit_code)
    except typer.TyperException as exc:  # usage errors found while parsing arguments
        out = CURRENT.out
        if out.json_mode:
            out.emit_envelope(
                {},
                errors=[error_item("", ExitCode.USAGE, exc.format_message())],
                exit_code=ExitCode.USAGE,
            )
        out.error(exc.format_message(), "see `cmcache --help`")
        code = ExitCode.USAGE
    except typer.Abort:
        code = ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except Exception as exc:
        out = CURRENT.out
        if out.verbose:
            traceback.print_exc()
        if out.json_mode:
            out.emit_envelope(
                {},
                errors=[error_item("", ExitCode.UNEXPECTED, repr(exc))],
                exit_code=ExitCode.UNEXPECTED,
            )
        out.error(f"unexpected error: {exc!r}", "rerun with -v for the full traceback")
        code = ExitCode.UNEXPECTED
    sys.exit(int(code or 0))
