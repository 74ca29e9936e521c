"""A fast path for the hot no-op calls: ``path REF`` and ``pull REF…`` when all is in place.

ComfyUI hooks and scripts call ``cmcache path`` on every model load, where Typer and Rich alone
cost about 100 ms to import. With plain arguments and every model present and unchanged since it
was verified, the answer needs neither. Anything else (another flag, a missing or changed model,
an error) returns None and the full CLI answers, the same way.
"""

from __future__ import annotations

import sys

from cmcache.core.errors import CmcacheError


def fast_path(args: list[str]) -> int | None:
    """Answer ``args`` (global options in front) without the full CLI when possible; None
    means "not here"."""
    from cmcache.cli.globals import split_leading_globals

    options, args = split_leading_globals(args)
    # --root, --config and --comfyui change where to look; the others, nothing about a no-op answer.
    if set(options) - {"--root", "--config", "--comfyui", "--no-progress", "-q", "--quiet"}:
        return None
    if len(args) < 2 or args[0] not in ("path", "pull"):
        return None
    command, rest = args[0], args[1:]
    ref_file = None
    if command == "pull" and "--file" in rest:  # a batch file (CI images): read it here too
        at = rest.index("--file")
        if at + 1 >= len(rest) or rest[at + 1] == "-":
            return None
        ref_file, rest = rest[at + 1], rest[:at] + rest[at + 2 :]
    flags = [a for a in rest if a.startswith("-")]
    refs = [a for a in rest if not a.startswith("-")]
    allowed = [[], ["--no-download"]] if command == "path" else [[]]
    if flags not in allowed or (command == "path" and len(refs) != 1):
        return None
    try:
        if ref_file is not None:
            from pathlib import Path

            from cmcache.core.refs import read_ref_lines

            refs += read_ref_lines(Path(ref_file).read_text().splitlines())
        return _answer(command, refs, options) if refs else None
    except (CmcacheError, OSError):
        return None


def _answer(command: str, refs: list[str], options: dict[str, str | bool]) -> int | None:
    from pathlib import Path

    from cmcache.core.settings.load import load_settings
    from cmcache.services.pull import cached_paths

    def flag(name: str) -> Path | None:
        value = options.get(name)
        return Path(value) if isinstance(value, str) else None

    settings = load_settings(
        config_flag=flag("--config"), root_flag=flag("--root"), comfyui_flag=flag("--comfyui")
    )
    targets = cached_paths(settings, refs, command)
    if targets is None:
        return None
    if command == "path":
        sys.stdout.write(f"{targets[0].final}\n")
    else:
        sys.stdout.write("".join(f"cached {t.ref}\n" for t in targets))
    return 0
