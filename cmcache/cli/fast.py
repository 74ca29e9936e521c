"""A fast path for the hot no-op calls: ``path REF`` and ``pull REF…`` when all is in place.

ComfyUI hooks and scripts call ``cmcache path`` on every model load, where Typer and Rich alone
cost about 100 ms to import. With plain arguments and every model present and unchanged since it
was verified, the answer needs neither. Anything else (another flag, a missing or changed model,
an error) returns None and the full CLI answers, the same way.
"""

from __future__ import annotations

import sys

from cmcache.errors import CmcacheError


def fast_path(args: list[str]) -> int | None:
    """Answer ``args`` without the full CLI when possible; None means "not here"."""
    # Global flags that change nothing about a no-op answer.
    while args and args[0] in ("--no-progress", "-q", "--quiet"):
        args = args[1:]
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

            from cmcache.pull import read_ref_lines

            refs += read_ref_lines(Path(ref_file).read_text().splitlines())
        return _answer(command, refs) if refs else None
    except (CmcacheError, OSError):
        return None


def _answer(command: str, refs: list[str]) -> int | None:
    from cmcache.cache.index import Index
    from cmcache.cache.store import ModelStore
    from cmcache.catalog import load_catalog
    from cmcache.pull import is_url, placed_record, resolve_targets
    from cmcache.settings import load_settings

    if any(is_url(r) for r in refs):
        return None
    settings = load_settings()
    store = ModelStore(settings.cache.root)
    index_path = store.meta_dir / "index.sqlite3"
    if not index_path.exists():
        return None
    targets = resolve_targets(load_catalog(settings), store, refs)
    index = Index(index_path)
    try:
        if not all(placed_record(index, t) for t in targets):
            return None
        for target in targets:
            index.record_use(target.entry.folder, target.entry.filename)
    finally:
        index.close()
    if command == "path":
        sys.stdout.write(f"{targets[0].final}\n")
    else:
        sys.stdout.write("".join(f"cached {t.entry.ref}\n" for t in targets))
    return 0
