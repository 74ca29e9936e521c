"""A fast path for the hot no-op calls: ``path REF`` and ``pull REF…`` when all is in place,
and ``predict`` for scripts.

ComfyUI hooks and scripts call ``cmcache path`` on every model load, where Typer and Rich alone
cost about 100 ms to import. With plain arguments and every model present and unchanged since it
was verified, the answer needs neither. ``predict [--limit N]`` answers here too when its output
goes to a script (``--json``, or stdout not a terminal). Anything else (another flag, a missing
or changed model, an error) returns None and the full CLI answers, the same way.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from cmcache.core.errors import CmcacheError

if TYPE_CHECKING:
    from cmcache.core.planning.predict import Prediction
    from cmcache.core.settings.model import Settings

PREDICT_EMPTY = "predict: no uses within [prefetch] window_days; nothing to learn from yet"
_PLACES = {"--root", "--config", "--comfyui"}  # change where to look
_QUIET = {"--no-progress", "-q", "--quiet"}  # change nothing about a no-op answer


def fast_path(args: list[str]) -> int | None:
    """Answer ``args`` (global options in front) without the full CLI when possible; None
    means "not here"."""
    from cmcache.cli.globals import split_leading_globals

    options, args = split_leading_globals(args)
    if args and args[0] == "predict":
        return _predict(options, args[1:])
    if set(options) - _PLACES - _QUIET:
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


def predict_lines(predictions: list[Prediction]) -> list[tuple[str, str, str]]:
    """What `predict` shows of each prediction: ref, score, reason."""
    return [(p.ref, f"{p.score:.2f}", p.reason) for p in predictions]


def predict_data(predictions: list[Prediction]) -> dict[str, object]:
    """`predict`'s JSON ``data``."""
    rows = [{"ref": p.ref, "score": p.score, "reason": p.reason} for p in predictions]
    return {"predictions": rows}


def _predict(options: dict[str, str | bool], rest: list[str]) -> int | None:
    """``predict [--limit N]`` with ``--json`` or off a terminal (a person gets the table)."""
    if set(options) - _PLACES - _QUIET - {"--json"}:
        return None
    if not rest:
        limit = 10
    elif len(rest) == 2 and rest[0] == "--limit" and rest[1].isdigit() and int(rest[1]) >= 1:
        limit = int(rest[1])
    else:
        return None
    json_mode = "--json" in options
    if not json_mode and sys.stdout.isatty():
        return None
    from cmcache.services.cache.predict import predict_models

    try:
        predictions = predict_models(_settings(options), limit)
    except (CmcacheError, OSError):
        return None
    if json_mode:
        envelope = {
            "command": "predict",
            "status": "ok",
            "exit_code": 0,
            "data": predict_data(predictions),
            "errors": [],
        }
        sys.stdout.write(json.dumps(envelope, indent=None, default=str) + "\n")
        return 0
    sys.stdout.write("".join("\t".join(line) + "\n" for line in predict_lines(predictions)))
    if not predictions and not set(options) & _QUIET - {"--no-progress"}:
        sys.stderr.write(PREDICT_EMPTY + "\n")
    return 0


def _settings(options: dict[str, str | bool]) -> Settings:
    from pathlib import Path

    from cmcache.core.settings.load import load_settings

    def flag(name: str) -> Path | None:
        value = options.get(name)
        return Path(value) if isinstance(value, str) else None

    return load_settings(
        config_flag=flag("--config"), root_flag=flag("--root"), comfyui_flag=flag("--comfyui")
    )


def _answer(command: str, refs: list[str], options: dict[str, str | bool]) -> int | None:
    from cmcache.services.pull.run import cached_paths

    settings = _settings(options)
    targets = cached_paths(settings, refs, command)
    if targets is None:
        return None
    if command == "path":
        sys.stdout.write(f"{targets[0].final}\n")
    else:
        sys.stdout.write("".join(f"cached {t.ref}\n" for t in targets))
    return 0
