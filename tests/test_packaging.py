"""The installed package is the one under test, and it carries every file the source tree has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, Cli

import cmcache

SOURCE = Path(__file__).resolve().parent.parent / "cmcache"


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


def test_tests_and_cli_subprocesses_import_the_installed_package_not_the_checkout(
    cli: Cli,
) -> None:
    assert not Path(cmcache.__file__).resolve().is_relative_to(SOURCE)
    done = subprocess.run(
        [sys.executable, "-c", "import cmcache; print(cmcache.__file__)"],
        env=cli.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not Path(done.stdout.strip()).resolve().is_relative_to(SOURCE)
