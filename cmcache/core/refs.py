"""How users write refs on the command line and in ref files."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


def read_ref_lines(lines: Iterable[str]) -> list[str]:
    """Refs from a file: one per line, ``#`` starts a comment, blank lines skipped."""
    refs = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # A trailing comment needs a blank before '#': URLs may contain '#'.
        text = text.split(" #", 1)[0].split("\t#", 1)[0].strip()
        refs.append(text)
    return refs

