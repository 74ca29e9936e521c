"""The installed package is the one under test, and it carries every file the source tree has."""

from __future__ import annotations

from pathlib import Path

import cmcache

SOURCE = Path(__file__).resolve().parent.parent / "src" / "cmcache"


def _files(top: Path) -> set[str]:
    return {
        p.relative_to(top).as_posix()
        for p in top.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_installed_package_has_every_source_file_including_data() -> None:
    installed = Path(cmcache.__file__).resolve().parent
    missing = _files(SOURCE) - _files(installed)
    assert not missing, f"files missing from the installed package: {sorted(missing)}"
